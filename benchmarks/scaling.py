"""Growth measured, not assumed: leuko's data steps timed at growing dataset sizes.

For each size N a dataset is made from DATA (the blood-cells training images) cycled:
copy 0 of each image is a real copy of the file, later copies are perturbed the way the
dataset's own augmentation made its siblings (random rotation with black fill, flips,
a small crop and shift, a slight brightness/contrast change, JPEG re-encode at quality
80-95), in the same class folders. The sets are deterministic (`--seed`), made once
under `--work` and reused by later runs (a set marked complete is not touched; a larger
set hard-links the files a smaller one already holds). Making them is timed apart.

Steps (`--steps`), each one leuko process, its wall time, CPU time (user+sys of it and
its workers), peak memory of its largest process (max RSS from wait4) and of its whole
process tree (sampled every 0.2 s):

    dedupe      leuko dedupe DIR --report R.json                   (dry run)
    split-cold  LEUKO_CACHE_DIR=<empty> leuko split DIR --out S1 --group-by auto
    split-warm  LEUKO_CACHE_DIR=<same>  leuko split DIR --out S2 --group-by auto --force
    cv-plan     python -c "... training.cv.prepare(RUN, CVPlan(DIR, 5, 'auto', ...))"
                (leuko cv has no plan-only mode; the warm cache, 5 folds)
    predict     leuko predict DIR --model wbc --format csv > /dev/null   (N <= --predict-max)
    count       leuko synth F --fields M; leuko count F/JPEGImages --model wbc --out C
                (M from --count-sizes, M <= --count-max; the synth is generation time)

Then the growth exponent log(t2/t1)/log(n2/n1) of each step between consecutive sizes
and between the smallest and largest (e.g. 10000->100000; a wall or CPU exponent above
1.2 is marked), for wall time, CPU time and peak memory (1 is
linear; 1.1 is about what N log N looks like over these ranges; memory exponents include
the fixed cost of a Python process with OpenCV/scikit-learn, so they read low).
A table goes to stderr, one JSON object to stdout and to OUT/scaling.json; the output of
every leuko command is appended to OUT/scaling.log. Run it niced on a shared machine:

    nice -n 19 python benchmarks/scaling.py --data ../shared/data/blood-cells/images/TRAIN \
        --sizes 10000 30000 --count-sizes 300 1000 --out /tmp/scaling/out
    nice -n 19 python benchmarks/scaling.py --data ../shared/data/blood-cells/images/TRAIN \
        --steps split-cold split-warm --sizes 10000 30000 100000

`--prepare` only makes the sets (the 100,000 one takes about 25 minutes on 2 busy
cores), so that a timed run later measures the steps alone:

    python benchmarks/scaling.py --data ../shared/data/blood-cells/images/TRAIN \
        --steps dedupe split-cold --sizes 10000 30000 100000 --work /work/scale-work --prepare
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

STEPS = ("dedupe", "split-cold", "split-warm", "cv-plan", "predict", "count")
SET_VERSION = "scaling-v1"  # bump when the perturbation changes: old sets are rebuilt
IMAGE_EXT = (".jpeg", ".jpg", ".png")

CV_PLAN = r"""
import sys
from pathlib import Path
from leukocli._util.progress import SILENT
from leukocli.training.cv import CVPlan, plan_options, prepare
from leukocli.training.options import TrainOptions
data, run = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
plan = CVPlan(str(data), 5, "auto", None, 1, plan_options(TrainOptions(), SILENT))
table = prepare(run, plan)
print(f"cv plan: {len(table)} images, {table['group'].nunique()} groups, "
      f"{table['fold'].nunique()} folds")
"""


# --------------------------------------------------------------------------- data
def _perturb(job: tuple[str, str, int, int, int]) -> None:
    """One sibling: src turned, flipped, cropped, shifted, recoloured, re-encoded (a worker)."""
    import numpy as np
    from PIL import Image, ImageEnhance, ImageOps

    src, dest, seed, copy, idx = job
    rng = np.random.default_rng([seed, copy, idx])
    with Image.open(src) as im:
        im = im.convert("RGB")
    w, h = im.size
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    if rng.random() < 0.5:
        im = ImageOps.flip(im)
    scale = rng.uniform(0.88, 1.0)  # crop up to 12% of each side away, then back to size
    cw, ch = round(w * scale), round(h * scale)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BILINEAR)
    shift = (round(rng.uniform(-0.06, 0.06) * w), round(rng.uniform(-0.06, 0.06) * h))
    im = im.rotate(float(rng.uniform(-30, 30)), Image.Resampling.BILINEAR, translate=shift,
                   fillcolor=(0, 0, 0))
    im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.92, 1.08)))
    im = ImageEnhance.Contrast(im).enhance(float(rng.uniform(0.92, 1.08)))
    tmp = Path(dest).with_name(f".tmp-{Path(dest).name}")
    im.save(tmp, format="JPEG", quality=int(rng.integers(80, 96)))
    os.replace(tmp, dest)


def _source_files(data: Path) -> list[Path]:
    return sorted(f for d in sorted(data.iterdir()) if d.is_dir() and not d.name.startswith(".")
                  for f in d.iterdir() if f.suffix.lower() in IMAGE_EXT)


def _plan_set(files: list[Path], n: int) -> list[tuple[Path, str, int, int]]:
    """(source, CLASS/name, copy, index) of the n files of a set: copy 0 is the files
    themselves, copy c names its files cCCC_name."""
    out = []
    for k in range(n):
        copy, src = divmod(k, len(files))
        f = files[src]
        name = f.name if copy == 0 else f"c{copy:03d}_{f.name}"
        out.append((f, f"{f.parent.name}/{name}", copy, src))
    return out


def _marker(work: Path, n: int) -> Path:
    return work / "data" / f"n{n}.complete.json"


def _set_meta(data: Path, n: int, seed: int) -> dict[str, Any]:
    return {"version": SET_VERSION, "data": str(data.resolve()), "images": n, "seed": seed}


def _complete(work: Path, meta: dict[str, Any]) -> bool:
    try:
        return json.loads(_marker(work, meta["images"]).read_text()) == meta
    except (OSError, ValueError):
        return False


def make_set(data: Path, n: int, work: Path, seed: int, jobs: int) -> dict[str, Any]:
    """The size-n set under WORK/data/nN, made unless already complete; how long it took."""
    root = work / "data" / f"n{n}"
    meta = _set_meta(data, n, seed)
    if _complete(work, meta):
        return {"dir": str(root), "seconds": 0.0, "reused": True}
    start = time.perf_counter()
    for stale in root.glob("*/.tmp-*"):  # an interrupted run's half-written files
        stale.unlink()
    files = _source_files(data)
    smaller = sorted((m for m in (json.loads(p.read_text()) for p in
                                  (work / "data").glob("n*.complete.json"))
                      if m.get("images", 0) < n and m == _set_meta(data, m["images"], seed)),
                     key=lambda m: -m["images"])
    donor = (work / "data" / f"n{smaller[0]['images']}", smaller[0]["images"]) if smaller else None
    todo = []
    linked = 0
    for k, (src, rel, copy, idx) in enumerate(_plan_set(files, n)):
        dest = root / rel
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if donor is not None and k < donor[1]:
            os.link(donor[0] / rel, dest)
            linked += 1
        elif copy == 0:
            tmp = dest.with_name(f".tmp-{dest.name}")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        else:
            todo.append((str(src), str(dest), seed, copy, idx))
    with ProcessPoolExecutor(jobs) as pool:
        list(pool.map(_perturb, todo, chunksize=64))
    _marker(work, n).write_text(json.dumps(meta))
    return {"dir": str(root), "seconds": round(time.perf_counter() - start, 1),
            "reused": False, "perturbed_now": len(todo), "linked": linked}


def make_fields(m: int, work: Path, seed: int, log: Path) -> dict[str, Any]:
    """M synthetic smear fields (leuko synth --fields), made once."""
    root = work / "fields" / f"f{m}-s{seed}"
    done = root / ".complete"
    if done.exists():
        return {"dir": str(root), "seconds": 0.0, "reused": True}
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    res = measure([_leuko(), "synth", str(root), "--fields", str(m), "--seed", str(seed)],
                  log, os.environ.copy())
    done.write_text("")
    return {"dir": str(root), "seconds": res["seconds"], "reused": False}


# --------------------------------------------------------------------------- measuring
def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of pid and all its descendants, now."""
    page = os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        todo += _children(p)
    return total / 2**20


def measure(cmd: list[str], log: Path, env: dict[str, str], stdout: Any = None,
            ok: tuple[int, ...] = (0,)) -> dict[str, float]:
    """Run cmd as one child; wall s, CPU s and peak RSS (largest process, whole tree)."""
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout if stdout is not None else fh,
                                stderr=fh, env=env)
        peak = [0.0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                peak[0] = max(peak[0], _tree_rss_mb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in ok:
        sys.exit(f"{' '.join(cmd[:3])} failed with exit {proc.returncode}; see {log}")
    return {"seconds": round(seconds, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_mb": round(usage.ru_maxrss / 1024, 1), "tree_peak_mb": round(peak[0], 1)}


def _leuko() -> str:
    return shutil.which("leuko") or "leuko"


# --------------------------------------------------------------------------- steps
def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def _groups_found(split_dir: Path) -> int | None:
    try:
        return int(json.loads((split_dir / "split.json").read_text())["params"]["groups"])
    except (OSError, ValueError, KeyError):
        return None


def run_size(n: int, folder: Path, steps: list[str], scratch: Path, log: Path,
             args: argparse.Namespace) -> dict[str, Any]:
    """Every selected step on the size-n set; the cache is fresh for split-cold."""
    leuko = _leuko()
    env = dict(os.environ, LEUKO_CACHE_DIR=str(scratch / f"cache-{n}"))
    res: dict[str, Any] = {}
    if "dedupe" in steps:
        res["dedupe"] = measure([leuko, "dedupe", str(folder), "--report",
                                 str(scratch / f"dedupe-{n}.json")], log, env)
    warm = False
    if "split-cold" in steps:
        _fresh(scratch / f"cache-{n}")
        out = _fresh(scratch / f"split-{n}-cold")
        res["split-cold"] = measure([leuko, "split", str(folder), "--out", str(out),
                                     "--group-by", "auto"], log, env)
        res["split-cold"]["groups"] = _groups_found(out)
        warm = True
    if not warm and ({"split-warm", "cv-plan"} & set(steps)):
        info = measure([leuko, "split", str(folder), "--out", str(scratch / f"split-{n}-prep"),
                        "--group-by", "auto", "--force"], log, env)  # fills the cache, untimed
        res["cache-fill (not a step)"] = info
    if "split-warm" in steps:
        out = scratch / f"split-{n}-warm"
        res["split-warm"] = measure([leuko, "split", str(folder), "--out", str(out),
                                     "--group-by", "auto", "--force"], log, env)
        res["split-warm"]["groups"] = _groups_found(out)
    if "cv-plan" in steps:
        run = _fresh(scratch / f"cv-{n}")
        res["cv-plan"] = measure([sys.executable, "-c", CV_PLAN, str(folder), str(run)],
                                 log, env)
    if "predict" in steps and n <= args.predict_max:
        with open(os.devnull, "w") as null:
            res["predict"] = measure([leuko, "predict", str(folder), "--model", args.model,
                                      "--format", "csv"], log, env, stdout=null)
    return res


def run_count(m: int, fields: Path, scratch: Path, log: Path, model: str) -> dict[str, Any]:
    out = _fresh(scratch / f"count-{m}")
    return measure([_leuko(), "count", str(fields / "JPEGImages"), "--model", model,
                    "--out", str(out)], log, os.environ.copy())


# --------------------------------------------------------------------------- report
METRICS = ("seconds", "cpu_s", "peak_mb", "tree_peak_mb")
GROWTH_BAR = 1.2  # issue 26: dedupe and split-cold grow at most this fast from 10k to 100k


def exponents(per_size: dict[int, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """log(v2/v1)/log(n2/n1) per metric: consecutive sizes and smallest to largest."""
    sizes = sorted(per_size)
    pairs = list(zip(sizes, sizes[1:], strict=False))
    if len(sizes) > 2:
        pairs.append((sizes[0], sizes[-1]))
    out: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        row = {}
        for a, b in pairs:
            va, vb = per_size[a].get(metric), per_size[b].get(metric)
            if va and vb:
                row[f"{a}->{b}"] = round(math.log(vb / va) / math.log(b / a), 2)
        out[metric] = row
    return out


def table(results: dict[str, dict[int, dict[str, Any]]], expo: dict[str, Any]) -> str:
    lines = [f"{'step':<12}{'N':>8}{'wall s':>10}{'cpu s':>10}{'peak MB':>10}"
             f"{'tree MB':>10}{'groups':>8}"]
    for step, per in results.items():
        for n in sorted(per):
            r = per[n]
            lines.append(f"{step:<12}{n:>8}{r['seconds']:>10.1f}{r['cpu_s']:>10.1f}"
                         f"{r['peak_mb']:>10.0f}{r['tree_peak_mb']:>10.0f}"
                         f"{r.get('groups') if r.get('groups') is not None else '':>8}")
    lines += ["", f"{'growth exponent':<28}{'wall':>8}{'cpu':>8}{'peak':>8}{'tree':>8}"]
    for step, e in expo.items():
        for pair in e["seconds"]:
            vals = [e[m].get(pair) for m in METRICS]
            over = " > 1.2" if any(v is not None and v > GROWTH_BAR for v in vals[:2]) else ""
            lines.append(f"{step + ' ' + pair:<28}"
                         + "".join(f"{v:>8.2f}" if v is not None else f"{'':>8}" for v in vals)
                         + over)
    return "\n".join(lines)


def _git() -> dict[str, Any]:
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "leukocli"], cwd=repo,
                               capture_output=True, text=True).stdout.splitlines()
    except OSError:
        return {}
    return {"head": head, "leukocli_files_changed": len(dirty)}


# --------------------------------------------------------------------------- main
def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="DIR/<CLASS>/*.jpeg to cycle")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 30000, 100000])
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    ap.add_argument("--predict-max", type=int, default=10000, help="predict only up to N")
    ap.add_argument("--count-sizes", type=int, nargs="+", default=[300, 1000],
                    help="synthetic fields for count")
    ap.add_argument("--count-max", type=int, default=1000, help="count only up to M fields")
    ap.add_argument("--model", default="wbc", help="for predict and count")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="processes making the sets")
    ap.add_argument("--work", type=Path, default=Path("/tmp/scaling"),
                    help="generated sets (kept) and each run's scratch (removed)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/scaling/out"))
    ap.add_argument("--keep-scratch", action="store_true")
    ap.add_argument("--prepare", action="store_true",
                    help="only make the image sets, so a later timed run starts at once")
    return ap.parse_args()


def main() -> None:
    args = _args()
    args.work = args.work.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "scaling.log"
    scratch = args.work / "runs" / time.strftime("%Y%m%d-%H%M%S")
    scratch.mkdir(parents=True)
    load_start = os.getloadavg()
    generation: dict[str, Any] = {}
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for n in sorted(set(args.sizes)):
        gen = make_set(args.data, n, args.work, args.seed, args.jobs)
        generation[f"images-{n}"] = gen
        print(f"set n={n}: {gen}", file=sys.stderr, flush=True)
        if args.prepare:
            continue
        for step, r in run_size(n, Path(gen["dir"]), args.steps, scratch, log, args).items():
            results.setdefault(step, {})[n] = r
            print(f"  {step} n={n}: {r}", file=sys.stderr, flush=True)
    if args.prepare:
        shutil.rmtree(scratch, ignore_errors=True)
        return
    if "count" in args.steps:
        for m in sorted({m for m in args.count_sizes if m <= args.count_max}):
            gen = make_fields(m, args.work, args.seed, log)
            generation[f"fields-{m}"] = gen
            results.setdefault("count", {})[m] = run_count(m, Path(gen["dir"]), scratch, log,
                                                           args.model)
            print(f"  count m={m}: {results['count'][m]}", file=sys.stderr, flush=True)
    if not args.keep_scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    expo = {s: exponents(per) for s, per in results.items() if len(per) > 1}
    out = {"benchmark": "scaling", "command": sys.argv, "sizes": sorted(set(args.sizes)),
           "steps": args.steps, "model": args.model, "generation": generation,
           "results": {s: {str(n): r for n, r in per.items()} for s, per in results.items()},
           "exponents": expo, "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
           "nice": os.nice(0), "git": _git(), "machine": machine()}
    print(table(results, expo), file=sys.stderr)
    text = json.dumps(out, indent=2)
    (args.out / "scaling.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
