"""Experiment (not a library feature): Catalyst-accelerated IDAL vs plain IDAL on OCR, docs/benchmarks.md 0.6.

Usage: python benchmarks/bench_catalyst.py [--n-train N] [--alpha A] [--epochs T] [--every M]
       [--kc-factor F ...] [--inner S] [--restart] [--rho-factor R]
kc is chosen as (F * mean ||x||^2 - alpha n) / n, i.e. (alpha + kc) n = F * mean ||x||^2.
"""
import argparse
import sys
from pathlib import Path
import time

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_idal import load_ocr_batches  # noqa: E402

from crflearn._kernels.idal_engine import RHO_WARMUP, initial_rho_range  # noqa: E402
from crflearn.models import PairwiseModel  # noqa: E402
from crflearn.solvers._idal_setup import build_engine, default_rho  # noqa: E402


INNER_EPOCHS = 1


def make(train, model, alpha, rho, seed=0):
    return build_engine(train, model, alpha=alpha, kappa=1.0, rho=rho, entropy="gini", loss_augmented=False,
                        warm=None, rng=np.random.default_rng(seed), inner_epochs=1, sampling="uniform")


def rel(row):
    return row["gap"] / abs(row["primal"])


class Catalyst:
    """Catalyst outer loop around an engine: subproblem P(w) + kc/2 ||w - y||^2."""

    def __init__(self, eng, kc, inner, restart, momentum="constant", beta_xi=0.0):
        self.eng, self.kc, self.inner, self.restart = eng, kc, inner, restart
        a, n = eng.alpha, eng.n
        self.scale = kc / (a + kc)
        eng.inv_lam_n = 1.0 / ((a + kc) * n)
        self.q = a / (a + kc)
        self.beta = (1 - np.sqrt(self.q)) / (1 + np.sqrt(self.q))
        self.y = [np.zeros_like(eng.weights.wuT), np.zeros_like(eng.weights.wp)]
        self.prev = [w.copy() for w in eng.weights]
        self.count = 0
        self.ak = np.sqrt(self.q)
        self.momentum = momentum
        self.last_f = np.inf
        self.beta_xi = beta_xi
        self.xi_prev = eng.state.xi.copy()

    def move_y(self, new):
        for w, y, yn in zip(self.eng.weights, self.y, new):
            w += self.scale * (yn - y)
            y[...] = yn

    def step(self):
        self.eng.step()
        self.count += 1
        if self.count % self.inner:
            return
        if self.beta_xi:
            xi = self.eng.state.xi
            cur_xi = xi.copy()
            xi += self.beta_xi * (cur_xi - self.xi_prev)
            self.xi_prev = cur_xi
            self.eng.rebuild_zeta()
        cur = [w.copy() for w in self.eng.weights]
        beta = self.beta
        if self.momentum == "recursion":
            q, a = self.q, self.ak
            a2 = 0.5 * (q - a * a + np.sqrt((q - a * a) ** 2 + 4 * a * a))
            beta = a * (1 - a) / (a * a + a2)
            self.ak = a2
        new = [c + beta * (c - p) for c, p in zip(cur, self.prev)]
        self.prev = cur
        self.move_y(new)

    def on_row(self, row):
        if self.restart and row["primal"] > self.last_f:
            # restart: y = current w, momentum reset
            self.prev = [w.copy() for w in self.eng.weights]
            self.xi_prev = self.eng.state.xi.copy()
            self.ak = np.sqrt(self.q)
        self.last_f = row["primal"]

    def finish_plain(self):
        """Switch to the original problem (kc -> 0): w = w_alpha(mu) recomputed."""
        eng = self.eng
        a, kc = eng.alpha, self.kc
        for w, y in zip(eng.weights, self.y):
            w[...] = ((a + kc) * w - kc * y) / a
        eng.inv_lam_n = 1.0 / (a * eng.n)


def run(train, model, alpha, epochs, every, kc=None, inner=1, restart=False, rho=None, adaptive=True,
        polish=0, momentum="constant", beta_xi=0.0):
    rho = default_rho(train, model, alpha) if rho is None else rho
    eng = make(train, model, alpha, rho)
    eng.inner_epochs = INNER_EPOCHS
    cat = Catalyst(eng, kc, inner, restart, momentum, beta_xi) if (kc or beta_xi) else None
    bounds = initial_rho_range(rho)
    rows = []
    cpu0 = time.process_time()
    mon = 0.0
    for ep in range(1, epochs + 1):
        if cat is not None and polish and ep == epochs - polish + 1:
            cat.finish_plain()
            cat = None
        (cat or eng).step()
        if ep % every == 0 or ep == epochs:
            t = time.process_time()
            row = eng.certify()
            mon += time.process_time() - t
            if cat is not None:
                cat.on_row(row)
            rows.append((ep, rel(row), row["al_gap"] / abs(row["primal"]), row["residual"], eng.rho,
                         row["primal"], row["dual"], time.process_time() - cpu0, mon))
            if adaptive and ep > RHO_WARMUP:
                eng.adapt_rho(row, bounds)
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--alpha", type=float, default=2e-4)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--kc-factor", type=float, nargs="*", default=[1.0])
    p.add_argument("--inner", type=int, nargs="*", default=[1])
    p.add_argument("--restart", action="store_true")
    p.add_argument("--fixed", action="store_true")
    p.add_argument("--no-plain", action="store_true")
    p.add_argument("--polish", type=int, default=0)
    p.add_argument("--momentum", default="constant")
    p.add_argument("--rho-sub", action="store_true", help="catalyst: default rho of the subproblem's alpha")
    p.add_argument("--rho-mult", type=float, default=1.0, help="rho = this x default (both)")
    p.add_argument("--beta-xi", type=float, nargs="*", default=[0.0])
    p.add_argument("--inner-epochs", type=int, default=1, help="sweeps per multiplier step (both)")
    args = p.parse_args()
    global INNER_EPOCHS
    INNER_EPOCHS = args.inner_epochs
    train, _, k, ic = load_ocr_batches(args.n_train)
    model = PairwiseModel(k, train.n_features, train.n_edge_features, fit_intercept=ic)
    sq = model.feature_view(train, "csr").sq_norms
    n = train.n_examples
    print(f"# n={n} alpha={args.alpha} alpha n={args.alpha * n:.3g} mean||x||^2={sq.mean():.3g} "
          f"median={np.median(sq):.3g} rho0={default_rho(train, model, args.alpha):.3g}", flush=True)
    make(train.subset([0]), model, args.alpha, 1.0).step()  # compile
    configs = [] if args.no_plain else [("plain", None, 1)]
    configs = [c + (0.0,) for c in configs]
    for f in args.kc_factor:
        for m in args.inner:
            for bx in args.beta_xi:
                kc = (f * sq.mean() - args.alpha * n) / n if f > 0 else 0.0
                configs.append((f"catalyst F={f} kc={kc:.3g} inner={m} beta_xi={bx}", kc, m, bx))
    for name, kc, m, bx in configs:
        rho = default_rho(train, model, args.alpha + kc) if (kc and args.rho_sub) else default_rho(
            train, model, args.alpha)
        rho *= args.rho_mult
        rows = run(train, model, args.alpha, args.epochs, args.every, kc, m, args.restart, rho=rho,
                   adaptive=not args.fixed, polish=args.polish if kc else 0, momentum=args.momentum,
                   beta_xi=bx)
        print(f"## {name}", flush=True)
        print("| epoch | cert rel gap | AL rel gap | residual | rho | primal | dual | CPU s | monitor CPU s |")
        for r in rows:
            print(f"| {r[0]} | {r[1]:.3e} | {r[2]:.2e} | {r[3]:.2e} | {r[4]:.3g} | {r[5]:.6f} | {r[6]:.6f} "
                  f"| {r[7]:.1f} | {r[8]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
