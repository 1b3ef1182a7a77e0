"""Convert StanfordExtra dog annotations to a smilfit HDF5 dataset; see ``--help``."""
from smilfit.cli.ingest_stanfordextra import main

if __name__ == '__main__':
    raise SystemExit(main())
