"""Convert StanfordExtra dog annotations (keypoints, boxes, RLE masks) to a smilfit HDF5 dataset.

Run ``python tools/ingest_stanfordextra.py --help``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from . import prog_name


DESCRIPTION = __doc__.splitlines()[0]

EPILOG = """\
Each record becomes one single-view sample: the image cut to a square around the dog's
box (side = longer box side x (1 + 2 x margin), black outside the frame), resized to
--target-size; the 24 keypoints (unlabelled ones NaN) and the silhouette mask go through
the same crop. The camera is the schema's uncalibrated default (f = max(W, H) pixels
of the original image, principal point at its centre, R = I, t = 0), so fits from
single images place the body with global_orient / transl. Images are looked for under
--image-dir, else beside the json and in its sample_imgs/ or Images/ folder.

example:
  python tools/ingest_stanfordextra.py \\
      ../shared/data/stanfordextra_sample/StanfordExtra_sample.json data/dogs_128.h5 \\
      --target-size 128
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name('ingest_stanfordextra'), description=DESCRIPTION,
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('json', help='StanfordExtra annotation json (a list of records)')
    p.add_argument('output', help='HDF5 dataset to write (atomically)')
    p.add_argument('--image-dir', default=None,
                   help='folder the records\' img_path are relative to')
    p.add_argument('--target-size', type=int, default=256,
                   help='side of the stored square images in pixels (default 256)')
    p.add_argument('--margin', type=float, default=0.1,
                   help='box margin per side, fraction of the longer box side (default 0.1)')
    p.add_argument('--indices', type=int, nargs='+', default=None,
                   help='record indices to ingest (default: all)')
    p.add_argument('--skip-multiple-dogs', action='store_true',
                   help='drop records flagged is_multiple_dogs')
    p.add_argument('--overwrite', action='store_true', help='replace an existing output')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the process exit status."""
    args = _parser().parse_args(argv)
    from ..datasets.ingest_sleap import DataIngestError  # not at the top: fast --help
    from ..datasets.ingest_stanfordextra import ingest_stanfordextra
    try:
        path = ingest_stanfordextra(args.json, args.output, args.image_dir,
                                    target_size=args.target_size, margin=args.margin,
                                    indices=args.indices,
                                    skip_multiple_dogs=args.skip_multiple_dogs,
                                    overwrite=args.overwrite, progress=not args.no_progress)
    except (DataIngestError, FileExistsError) as err:
        print(f'ingest_stanfordextra: error: {err}', file=sys.stderr)
        return 1
    print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
