"""smilfit's HDF5 dataset format in four rooms: ``schema`` (fields, header, partial files),
``codecs`` (images, masks), ``writer`` (:class:`DatasetWriter`), ``reader``
(:class:`DatasetReader`). :mod:`smilfit.datasets.hdf5_format` re-exports them."""
