"""Write .gpu_data/fer2013_subset.csv.gz: a FER2013 subset small enough to travel to a lent GPU box.

The device tool carries at most 64 MiB; the full file is 94 MB. The subset keeps the first N
Training rows and every PublicTest/PrivateTest row, in the original format, so scripts/gpu_check.sh
can run a short real-data study with `--data .gpu_data/fer2013_subset.csv.gz`.

    python scripts/make_gpu_subset.py [--source ../shared/data/fer2013/fer2013.csv.gz] [--train 8000]
"""
import argparse
from pathlib import Path

import pandas as pd

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--source", default=str(Path(__file__).resolve().parents[2] / "shared/data/fer2013/fer2013.csv.gz"))
p.add_argument("--train", type=int, default=8000)
args = p.parse_args()
df = pd.read_csv(args.source)
subset = pd.concat([df[df.Usage == "Training"].head(args.train), df[df.Usage != "Training"]])
out = Path(".gpu_data/fer2013_subset.csv.gz")
out.parent.mkdir(exist_ok=True)
subset.to_csv(out, index=False, compression="gzip")
print(f"wrote {out}: {len(subset)} rows, {out.stat().st_size / 2**20:.1f} MiB")
