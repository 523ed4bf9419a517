"""dedupe speed and memory: leuko against imagededup's PHash, and growth with size.

1. On DATA (the real training set): images/s and peak memory of `leuko dedupe` and of
   imagededup's `PHash().find_duplicates` (threshold 10, its default), each in its own
   subprocess so peak RSS is its own. imagededup is optional (`pip install imagededup`,
   which needs torch and torchvision; see the README); without it that row is skipped.
2. Growth: leuko on 2,500, 10,000 and 40,000 images; the larger sets are made by copying
   DATA with JPEG re-encoding (quality 80-95) into a temporary folder, so they hold
   near-duplicates for leuko to verify, as a real merged collection would.
3. Many copies: 4 images (one per class) x 600 byte-identical copies plus one
   re-encoded copy of each, 2,404 files: the case that once took 7 minutes because
   every copy was compared with every other. The ratio is against the 2,500 row.

    python benchmarks/dedupe_speed.py --data ../shared/data/blood-cells/images/TRAIN
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

WORKER = r"""
import json, resource, sys, time
tool, folder = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if tool == "leuko":
    from leukocli.curation.dedupe import find_duplicates
    f = find_duplicates(folder)
    images, pairs = f.scanned, sum(len(g.files) - 1 for g in f.groups)
else:
    from imagededup.methods import PHash
    ph = PHash(verbose=False)
    enc = ph.encode_images(image_dir=folder, recursive=True)
    dup = ph.find_duplicates(encoding_map=enc, max_distance_threshold=10)
    images, pairs = len(enc), sum(len(v) for v in dup.values()) // 2
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "images": images, "pairs": pairs,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_worker(tool: str, folder: Path) -> dict[str, float] | None:
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, tool, str(folder)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        print(f"{tool} failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["images_per_s"] = res["images"] / res["seconds"]
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()}


def has_imagededup() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import imagededup.methods"], capture_output=True, text=True
    )
    return probe.returncode == 0


def make_set(data: Path, n: int, out: Path) -> Path:
    """n images: DATA's files, then re-encoded copies of them, in class folders."""
    from PIL import Image

    files = sorted(data.rglob("*.jpeg")) + sorted(data.rglob("*.jpg"))
    made = 0
    copy = 0
    while made < n:
        for src in files:
            if made >= n:
                break
            dest = out / src.parent.name / (f"c{copy}_{src.name}" if copy else src.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if copy == 0:
                shutil.copyfile(src, dest)
            else:
                with Image.open(src) as im:
                    im.convert("RGB").save(dest, quality=80 + (made * 7) % 16)
            made += 1
        copy += 1
    return out


def make_copies(data: Path, copies: int, out: Path) -> Path:
    """One image per class folder of DATA, `copies` times byte-identical plus a re-encode."""
    from PIL import Image

    for cls in sorted(p for p in data.iterdir() if p.is_dir()):
        src = sorted(cls.glob("*.jp*g"))[0]
        (out / cls.name).mkdir(parents=True, exist_ok=True)
        for i in range(copies):
            shutil.copyfile(src, out / cls.name / f"{i}.jpeg")
        with Image.open(src) as im:
            im.convert("RGB").save(out / cls.name / "reencoded.jpeg", quality=85)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--sizes", default="2500,10000,40000")
    args = ap.parse_args()
    out: dict[str, object] = {"benchmark": "dedupe_speed", "data": str(args.data)}
    leuko = run_worker("leuko", args.data)
    out["leuko"] = leuko
    if has_imagededup():
        ref = run_worker("imagededup", args.data)
        out["imagededup_phash"] = ref
        if leuko and ref:
            out["speed_ratio_vs_imagededup"] = round(
                leuko["images_per_s"] / ref["images_per_s"], 2
            )
            out["memory_ratio_vs_imagededup"] = round(
                leuko["peak_rss_mb"] / ref["peak_rss_mb"], 2
            )
    else:
        out["imagededup_phash"] = "skipped: imagededup (with torch, torchvision) not installed"
    growth = []
    with tempfile.TemporaryDirectory(prefix="leuko-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            t0 = time.perf_counter()
            folder = make_set(args.data, n, Path(tmp) / f"n{n}")
            made_s = time.perf_counter() - t0
            res = run_worker("leuko", folder)
            growth.append({"images": n, "build_set_s": round(made_s, 1), **(res or {})})
            shutil.rmtree(folder)
    base = growth[0]
    for g in growth:
        if "seconds" in g and "seconds" in base:
            g["time_ratio_vs_smallest"] = round(g["seconds"] / base["seconds"], 2)
            g["memory_ratio_vs_smallest"] = round(g["peak_rss_mb"] / base["peak_rss_mb"], 2)
    out["growth"] = growth
    with tempfile.TemporaryDirectory(prefix="leuko-bench-") as tmp:
        many = run_worker("leuko", make_copies(args.data, 600, Path(tmp) / "copies"))
        if many and "seconds" in base:
            many["time_ratio_vs_2500_row"] = round(many["seconds"] / base["seconds"], 2)
        out["many_copies"] = many
    out["machine"] = machine()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
