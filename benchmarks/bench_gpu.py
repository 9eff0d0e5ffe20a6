"""The GPU training step, in one run: eager vs captured, GradNorm vs fixed weights, one epoch,
and many independent trials sharing one GPU.

    python benchmarks/bench_gpu.py [--device cuda] [--time-limit 480] [--out benchmarks/results]
    bash benchmarks/gpu_run.sh run 240      # on a bare GPU machine: the CUDA tests, then this
    python benchmarks/bench_gpu.py --device cpu --quick     # a small check of the script itself

Prints and writes (``<out>/gpu_step_<device>.json`` and ``.md``):

1. ms per training step, MCDM-2 at the paper's configuration (the config defaults), batch 32
   and 256, dual-branch GradNorm and fixed task weights, eager and captured as one CUDA graph
   (``cuda_graph``; captured only on CUDA), its elementwise stages fused as the trainer runs
   them (``fuse_elementwise``: on CUDA) and, at batch 32 with GradNorm on CUDA, unfused too (if
   the captured step is faster unfused, the epoch, sharing and profile parts run unfused and
   the results say so); with the unfused step's ops that compute (counted once on the eager
   step, ``scd_core.static_step.ComputeOps``: about one kernel each) and its us per op, which
   tells whether a captured step is bound by its number of kernels;
2. seconds per epoch over the synthetic ``paper`` preset (corpora sized like the paper's,
   ``bench_train.paper_store``) at batch 32 with GradNorm, the step as the trainer runs it
   (captured on CUDA), and the dev evaluation that ends a trial's epoch;
3. paper-preset trial-epochs per GPU-hour with N = 1, 2, 4, 8 independent training processes
   sharing the device (what Ray Tune's fractional ``gpus_per_trial`` does): each process
   loads the data, warms up, then trains epochs (train + dev evaluation, no checkpoints)
   for a common window; the rate is the sum over processes of 3600 / their mean epoch time;
4. where the batch-32 GradNorm step's device time goes (``torch.profiler``, eager and
   captured): the device ops per step as the device ran them (CUDA kernels, copies, fills),
   their busy time against the step's time, and the busiest of them, so that one GPU run
   says what to cut next (many tiny kernels, a few slow ones, or a device waiting on the host).

Imports only ``scd_core`` (no Ray, MLflow or vLLM): it runs on a bare GPU machine with torch,
torch-geometric and the project's small dependencies. ``--time-limit`` bounds the whole
run; a part that would not fit is skipped and says so, one that fails is recorded and the run
goes on (exit status 1 at the end), and the results are written after every part. The parts
the targets are read from run first (the batch-32 GradNorm step, the epoch, N = 8), then the
profile, then the rest. Targets (issue 16, H100/H200): an epoch in at most 3 s, and at least
2,000 trial-epochs per GPU-hour with 8 processes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from bench_train import bench_config, paper_store, shuffled_batches, synchronize
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from scd_core.evaluation import dev_score, evaluate
from scd_core.data import load_training_data
from scd_core.static_step import VIEW_OPS, ComputeOps
from scd_core.trainer import Trainer

TOP_WORK = 12  # the device's busiest kernels (ops on the CPU) listed per profiled mode
# CPU ops that describe or reserve memory: no work of their own.
NOT_WORK = VIEW_OPS | {"aten::empty", "aten::empty_strided", "aten::resolve_conj", "aten::resolve_neg",
                       "aten::_reshape_alias", "aten::reshape", "aten::flatten"}
TARGET_EPOCH_S = 3.0
TARGET_TRIAL_EPOCHS_PER_HOUR = 2000
RESULTS = Path(__file__).resolve().parent / "results"


def time_steps(trainer: Trainer, steps: int, warmup: int) -> float:
    """ms per step over ``steps`` steps after ``warmup`` (which includes the graph capture)."""
    batches = shuffled_batches(trainer)
    trainer.model.train()
    order = [batches[i % len(batches)] for i in range(warmup + steps)]
    for step, idx in enumerate(order[:warmup]):
        trainer.train_step(None, idx, 0, step)
    synchronize(trainer.device)
    tic = time.perf_counter()
    for step, idx in enumerate(order[warmup:]):
        trainer.train_step(None, idx, 0, step)
    synchronize(trainer.device)
    return 1000 * (time.perf_counter() - tic) / steps


def captured(trainer: Trainer) -> bool:
    return trainer._static is not None and trainer._static[1].graph is not None


def fused(trainer: Trainer) -> bool:
    """Whether the step's elementwise stages ran compiled (``fuse_elementwise``), not fallen back to eager."""
    return trainer._record.compiled is not None


def _no_estimate() -> float:
    """Seconds a step variant or the epoch needs before it starts: not estimated (they are short)."""
    return 0.0


def trial_epoch(trainer: Trainer, epoch: int) -> None:
    """What a trial does per epoch, less the checkpoint: train, then score the dev splits."""
    trainer.train_epoch(epoch)
    dev_score(evaluate(trainer.model, trainer.data.dev), trainer.tasks)


def faster_unfused(steps: list[dict]) -> bool:
    """Whether the step rows measured the captured batch-32 GradNorm step faster unfused than fused
    (a capture that failed ran eagerly, and its time says so)."""
    ms = {r["fused"]: r["ms_per_step"] for r in steps if (r["batch_size"], r["weights"], r["mode"]) == (32, "gradnorm", "captured")}
    return ms.keys() == {True, False} and ms[False] < ms[True]


def device_profile(trainer: Trainer, steps: int) -> dict:
    """Where a step's device time goes: torch.profiler over ``steps`` steps after a warm-up
    that includes any capture. On CUDA it lists the kernels, copies and fills the GPU ran, as
    the GPU timed them; on the CPU the ops that do the work (no op beneath them, no view or
    allocation), by their own time. ``busy_ms_per_step`` is their sum; against
    ``ms_per_step`` (the same number of steps timed without the profiler, whose host overhead
    would count) a busy share well under 1 says the device waited on the host."""
    ms = time_steps(trainer, steps, warmup=5)
    batches = shuffled_batches(trainer)
    cuda = trainer.device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        for step in range(steps):  # the batches after the timed ones
            trainer.train_step(None, batches[(5 + steps + step) % len(batches)], 0, step)
        synchronize(trainer.device)
    if cuda:
        work = [(e.name, e.time_range.elapsed_us()) for e in prof.events() if e.device_type == DeviceType.CUDA]
    else:
        def works(e) -> bool:
            return e.name.startswith("aten::") and e.name not in NOT_WORK

        work = [(e.name, e.self_cpu_time_total) for e in prof.events()
                if works(e) and not any(works(c) for c in e.cpu_children)]
    by_name: dict[str, list[float]] = {}
    for name, us in work:
        by_name.setdefault(name, []).append(us)
    busy_us = sum(us for _, us in work)
    top = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:TOP_WORK]
    return {"ms_per_step": round(ms, 3), "device_ops_per_step": round(len(work) / steps, 1),
            "busy_ms_per_step": round(busy_us / steps / 1000, 3),
            "busy_share": round(busy_us / steps / 1000 / ms, 3),
            "top": [{"name": name[:120], "per_step": round(len(times) / steps, 2),
                     "us_each": round(sum(times) / len(times), 2),
                     "share_of_busy": round(sum(times) / busy_us, 3) if busy_us else None} for name, times in top]}


# --------------------------------------------------------------------------- worker process


def worker(args: argparse.Namespace) -> None:
    """One independent trial: warm up, say READY, wait for the go file, train epochs for the window."""
    device = torch.device(args.device)
    cfg = bench_config(args.device, 32, *args.set)
    data = load_training_data(cfg, args.features, device)
    trainer = Trainer(cfg, data)
    batches = shuffled_batches(trainer)
    for step, idx in enumerate(batches[:6]):  # allocator, kernels, graph capture
        trainer.train_step(None, idx, 0, step)
    evaluate(trainer.model, data.dev)
    synchronize(device)
    print("READY", flush=True)
    go = Path(args.go)
    while not go.exists():
        time.sleep(0.01)
    start = float(go.read_text())
    epochs = []
    epoch = 0
    while True:
        tic = time.perf_counter()
        trial_epoch(trainer, epoch)
        synchronize(device)
        toc = time.perf_counter()
        epochs.append([tic, toc])
        epoch += 1
        if toc - start >= args.window:
            break
    print("RESULT " + json.dumps({"epochs": epochs, "start": start, "window": args.window,
                                  "captured": captured(trainer), "fused": fused(trainer)}), flush=True)


def profile_worker(args: argparse.Namespace) -> None:
    """One ``device_profile`` in a process of its own: a CUDA profiler session can leave the
    profiler (CUPTI) blind, or a capture disturbed, for the rest of the process that ran it."""
    device = torch.device(args.device)
    cfg = bench_config(args.device, 32, f"cuda_graph={'on' if args.profile == 'captured' else 'off'}", *args.set)
    trainer = Trainer(cfg, load_training_data(cfg, args.features, device))
    row = {"batch_size": 32, "weights": "gradnorm", "mode": args.profile, **device_profile(trainer, args.steps),
           "captured": captured(trainer), "fused": fused(trainer)}
    print("RESULT " + json.dumps(row), flush=True)


def share(n: int, args: argparse.Namespace, root: Path, window: float, sets: list[str]) -> dict:
    """Trial-epochs per hour of ``n`` training processes sharing the device, each with config ``sets``."""
    go = Path(tempfile.mkdtemp()) / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--device", args.device,
               "--features", str(root), "--go", str(go), "--window", str(window), *(a for s in sets for a in ("--set", s))]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    try:
        for p in procs:  # every process warmed up before the clock starts
            for line in p.stdout:
                if line.startswith("READY"):
                    break
            else:
                raise RuntimeError(f"a worker of the {n}-process run exited before it was ready (exit code {p.wait()})")
        go.write_text(repr(time.perf_counter()))
        results = []
        for p in procs:
            out, _ = p.communicate()
            if p.returncode:
                raise RuntimeError(f"a worker of the {n}-process run failed with exit code {p.returncode}")
            results.append(json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:]))
    finally:
        for p in procs:  # no worker outlives a failed run
            if p.poll() is None:
                p.kill()
    per_process = []
    for r in results:
        end = r["start"] + r["window"]
        inside = [b - a for a, b in r["epochs"] if b <= end] or [r["epochs"][0][1] - r["epochs"][0][0]]
        per_process.append(sum(inside) / len(inside))  # epochs inside the window ran with all n processes busy
    return {"processes": n, "window_s": window, "epoch_s_per_process": [round(s, 3) for s in per_process],
            "trial_epochs_per_hour": round(sum(3600 / s for s in per_process), 1),
            "captured": all(r["captured"] for r in results), "fused": all(r["fused"] for r in results)}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true",
                        help="a small check: demo preset, hidden size 64, few steps, N = 1, 2")
    parser.add_argument("--time-limit", type=float, default=480.0, help="seconds for the whole run")
    parser.add_argument("--out", default=str(RESULTS), help="folder of the JSON and markdown results")
    parser.add_argument("--features", help="a store to use instead of the synthetic preset")
    parser.add_argument("--steps", type=int, help="timed steps per variant (default 100, quick 3)")
    parser.add_argument("--processes", help="comma-separated N, run in this order (default 8,1,4,2; quick 1,2)")
    parser.add_argument("--window", type=float, help="seconds each sharing run trains (default 20, quick 2)")
    parser.add_argument("--set", action="append", default=[], help="a config override for every run, key=value")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--go", help=argparse.SUPPRESS)
    parser.add_argument("--profile", choices=("eager", "captured"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if args.profile:
        profile_worker(args)
        return {}
    began = time.perf_counter()
    deadline = began + args.time_limit
    quick = args.quick
    if quick:
        args.set = ["model.hidden_dim=64", "model.out_features=64", *args.set]
    steps = args.steps or (3 if quick else 100)
    processes = [int(n) for n in (args.processes or ("1,2" if quick else "8,1,4,2")).split(",")]
    window = args.window or (2.0 if quick else 20.0)
    device = torch.device(args.device)
    root = paper_store(args.features, "demo" if quick else "paper")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    result: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": name,
                    "torch": torch.__version__, "preset": "demo" if quick else ("paper" if not args.features else str(root)),
                    "model": "MCDM-2", "overrides": args.set, "steps": [], "epoch": None, "sharing": [], "profile": [],
                    "skipped": [], "failed": [], "seconds": 0.0,
                    "target_parts_fuse_elementwise": "default"}
    print(f"{name}, torch {torch.__version__}, store {root}", flush=True)
    data = load_training_data(bench_config(args.device, 32, *args.set), root, device)

    ops_per_step: dict[tuple[int, str], int] = {}  # counted on the eager step; a capture replays those ops

    def step_variant(batch_size: int, weights: str, mode: str, fuse: str = "auto") -> None:
        cfg = bench_config(args.device, batch_size, f"ssl.gradnorm={str(weights == 'gradnorm').lower()}",
                           f"cuda_graph={'on' if mode == 'captured' else 'off'}", f"fuse_elementwise={fuse}", *args.set)
        trainer = Trainer(cfg, data)
        ms = time_steps(trainer, steps, warmup=5 if mode == "captured" else 2)
        if mode == "eager":  # the step runs unfused under the counter (torch.compile refuses it)
            with ComputeOps() as counted:
                trainer.train_step(None, shuffled_batches(trainer)[0], 0, 0)
            ops_per_step[batch_size, weights] = counted.total
        ops = ops_per_step.get((batch_size, weights))
        row = {"batch_size": batch_size, "weights": weights, "mode": mode, "fused": fused(trainer),
               "ms_per_step": round(ms, 3), "captured": captured(trainer),
               "samples_per_s": round(1000 * batch_size / ms, 1), "ops_per_step": ops}
        # Per op of the unfused step only (fused, its kernels are the profile's). From the
        # reported ms, so a row's figures agree with each other to the last digit.
        row["us_per_op"] = None if ops is None or row["fused"] else round(1000 * row["ms_per_step"] / ops, 2)
        result["steps"].append(row)
        per_op = "" if row["us_per_op"] is None else f"  {ops} ops, {row['us_per_op']} us/op"
        print(f"step  batch {batch_size:>3}  {weights:>8}  {mode:>8}{' fused' if row['fused'] else ''}: {ms:8.2f} ms"
              f"{per_op}{'' if mode == 'eager' or row['captured'] else '  (capture failed: eager)'}", flush=True)

    def target_sets() -> list[str]:
        """The config of the parts the targets are read from: the trainer's default, unless this
        run measured the step faster unfused (then the figures come from the faster step, and
        say so; the default should follow)."""
        unfused = faster_unfused(result["steps"])
        result["target_parts_fuse_elementwise"] = "off" if unfused else "default"
        return [*args.set, "fuse_elementwise=off"] if unfused else list(args.set)

    def epoch() -> None:
        """One epoch as a run trains it (captured on CUDA), then the dev evaluation."""
        trainer = Trainer(bench_config(args.device, 32, *target_sets()), data)
        seconds = []
        for e in range(2):  # the first includes the warm-up and the capture
            synchronize(device)
            tic = time.perf_counter()
            trainer.train_epoch(e)
            synchronize(device)
            seconds.append(time.perf_counter() - tic)
        tic = time.perf_counter()
        evaluate(trainer.model, data.dev)
        eval_s = time.perf_counter() - tic
        result["epoch"] = {"batch_size": 32, "weights": "gradnorm", "captured": captured(trainer), "fused": fused(trainer),
                           "steps": trainer.steps_per_epoch, "rows": len(data.train),
                           "first_epoch_s": round(seconds[0], 3), "epoch_s": round(seconds[1], 3),
                           "dev_eval_s": round(eval_s, 3), "target_epoch_s": TARGET_EPOCH_S}
        print(f"epoch: {seconds[1]:.2f} s ({trainer.steps_per_epoch} steps; first {seconds[0]:.2f} s), "
              f"dev evaluation {eval_s:.2f} s; target <= {TARGET_EPOCH_S} s", flush=True)

    def profile_variant(mode: str) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--profile", mode, "--device", args.device,
                   "--features", str(root), "--steps", str(steps), *(a for s in target_sets() for a in ("--set", s))]
        run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if run.returncode:
            raise RuntimeError(f"the {mode} profile exited with code {run.returncode}: {run.stderr.strip()[-1500:]}")
        row = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
        result["profile"].append(row)
        print(f"profile batch 32 gradnorm {mode:>8}: {row['device_ops_per_step']} device ops per step, busy "
              f"{row['busy_ms_per_step']} ms of {row['ms_per_step']} ms ({row['busy_share']:.0%})", flush=True)

    def sharing(n: int) -> None:
        row = share(n, args, root, window, target_sets())
        result["sharing"].append(row)
        print(f"sharing N={n}: {row['trial_epochs_per_hour']:.0f} trial-epochs per hour "
              f"(epoch per process {row['epoch_s_per_process']} s)", flush=True)

    def sharing_needs(n: int) -> float:
        # Start-up (imports, data, warm-up) plus the window plus the epoch that overruns it.
        return window + 20 + (result["epoch"] or {}).get("epoch_s", 5) * n

    # The parts the targets are read from come first, so a short --time-limit still gets them:
    # the batch-32 GradNorm step (on CUDA captured also unfused: what fusing gains, and which
    # the target parts use), the epoch, the first sharing run (8 processes); then where the
    # step's device time goes (a few seconds), then the rest.
    cuda = device.type == "cuda"
    modes = ["eager", "captured"] if cuda else ["eager"]
    shares = [(f"sharing N={n}", partial(sharing, n), partial(sharing_needs, n)) for n in processes]
    parts: list[tuple[str, Callable[[], None], Callable[[], float]]] = [
        *((f"step batch 32 gradnorm {m}", partial(step_variant, 32, "gradnorm", m), _no_estimate) for m in modes),
        *((("step batch 32 gradnorm captured unfused", partial(step_variant, 32, "gradnorm", "captured", "off"),
            _no_estimate),) if cuda else ()),
        ("epoch", epoch, _no_estimate),
        *shares[:1],
        *((f"profile batch 32 gradnorm {m}", partial(profile_variant, m), _no_estimate) for m in modes),
        *((("step batch 32 gradnorm eager unfused", partial(step_variant, 32, "gradnorm", "eager", "off"),
            _no_estimate),) if cuda else ()),
        *shares[1:],
        *((f"step batch {b} {w} {m}", partial(step_variant, b, w, m), _no_estimate)
          for b in (32, 256) for w in ("gradnorm", "fixed") for m in modes if (b, w) != (32, "gradnorm")),
    ]
    for label, run, needs in parts:
        if time.perf_counter() + needs() > deadline:
            result["skipped"].append(f"{label}: time limit")
            print(f"{label}: skipped (time limit)", flush=True)
            continue
        try:
            run()
        except Exception as error:  # noqa: BLE001 - one part's failure must not cost the others' figures
            traceback.print_exc()
            result["failed"].append(f"{label}: {type(error).__name__}: {error}")
            print(f"{label}: failed ({type(error).__name__}: {error}); the run goes on", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the sharing processes get the memory a finished part held
        result["seconds"] = round(time.perf_counter() - began, 1)
        write(result, Path(args.out), device.type)  # after every part: a run killed later keeps what it measured
    result["seconds"] = round(time.perf_counter() - began, 1)
    write(result, Path(args.out), device.type)
    if result["failed"]:
        raise SystemExit(f"{len(result['failed'])} part(s) failed (in the results' 'failed'): {result['failed']}")
    return result


def write(result: dict, out: Path, device: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result["steps"].sort(key=lambda r: (r["batch_size"], r["weights"] != "gradnorm", r["mode"] != "eager", r["fused"]))
    result["sharing"].sort(key=lambda r: r["processes"])
    (out / f"gpu_step_{device}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Training step on {result['device']} ({result['date']}, torch {result['torch']})", "",
             (f"Preset {result['preset']}, {result['model']}, overrides {result['overrides'] or 'none'}; "
              f"whole run {result['seconds']} s."), "",
             "| batch | weights | mode | fused | ms/step | samples/s | ops/step (unfused) | us/op |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['batch_size']} | {r['weights']} | {r['mode']}{'' if r['mode'] == 'eager' or r['captured'] else ' (failed: eager)'}"
              f" | {'yes' if r['fused'] else 'no'} | {r['ms_per_step']} | {r['samples_per_s']} | {r['ops_per_step'] or '-'}"
              f" | {r['us_per_op'] or '-'} |" for r in result["steps"]]
    if result["epoch"]:
        e = result["epoch"]
        lines += ["", (f"Epoch (batch 32, GradNorm, {'captured' if e['captured'] else 'eager'}"
                       f"{', fused' if e['fused'] else ', unfused'}): **{e['epoch_s']} s** "
                       f"over {e['steps']} steps (first epoch {e['first_epoch_s']} s; dev evaluation {e['dev_eval_s']} s); "
                       f"target <= {e['target_epoch_s']} s.")]
    if result["sharing"]:
        lines += ["", "| processes | trial-epochs per hour | epoch s per process | fused |", "|---|---|---|---|"]
        lines += [f"| {r['processes']} | {r['trial_epochs_per_hour']} | {', '.join(map(str, r['epoch_s_per_process']))} "
                  f"| {'yes' if r['fused'] else 'no'} |"
                  for r in result["sharing"]]
        lines += ["", f"Target: >= {TARGET_TRIAL_EPOCHS_PER_HOUR} trial-epochs per hour with 8 processes."]
    for row in result["profile"]:
        mode = row["mode"] if row["mode"] == "eager" or row["captured"] else "captured (failed: eager)"
        lines += ["", (f"Device time per step, batch 32, GradNorm, {mode} (torch.profiler): "
                       f"{row['device_ops_per_step']} device ops, busy {row['busy_ms_per_step']} ms of "
                       f"{row['ms_per_step']} ms per step ({row['busy_share']:.0%})."), "",
                  "| device op | per step | us each | share of busy |", "|---|---|---|---|"]
        lines += [f"| `{t['name']}` | {t['per_step']} | {t['us_each']} | {t['share_of_busy']} |" for t in row["top"]]
    if result["target_parts_fuse_elementwise"] == "off":
        lines += ["", ("The epoch, sharing and profile parts ran unfused (`fuse_elementwise=off`): this run "
                       "measured the captured step faster unfused than fused.")]
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(result["skipped"])]
    if result["failed"]:
        lines += ["", "Failed: " + "; ".join(result["failed"])]
    (out / f"gpu_step_{device}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
