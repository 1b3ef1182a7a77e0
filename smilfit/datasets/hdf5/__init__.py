"""smilfit's HDF5 dataset format in its rooms: ``schema`` (fields, header, partial files),
``codecs`` (images, masks), ``writer`` (:class:`DatasetWriter`) with ``validation`` (what
it is given), ``layout`` (how datasets are created and grow) and ``resume`` (continuing an
interrupted write), ``reader`` (:class:`DatasetReader`).
:mod:`smilfit.datasets.hdf5_format` re-exports them."""
