"""The steps of ``sam/package.py``, the Lambda artifact's build: ``wheels`` (the pinned dependencies),
``trim`` (pruning, stripping), ``project`` (the shipped code and bundle, .pyc, permissions) and ``sizes``
(sizes and the zip); ``common`` holds what they share. Not named ``packaging``: ``python sam/package.py``
puts ``sam/`` on ``sys.path``, where that name would shadow the ``packaging`` distribution."""
