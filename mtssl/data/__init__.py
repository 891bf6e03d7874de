"""Data sets, two-stream sampling and augmentation.

Every data set entry returns a :class:`~mtssl.data.dataset.SegmentationData`: a training set of
augmented patches (labeled cases first in each batch), whole-volume validation and test cases,
and the record of which cases are labeled. A batch uses one vocabulary everywhere: ``image``
``(B, C, *S)``, ``label`` ``(B, *S)`` (zeros for unlabeled samples), ``labeled`` ``(B,)``,
``spacing`` ``(B, len(S))`` and ``case`` ids.
"""
