"""kdep-cache: Knowledge Distillation as Efficient Pre-training with a teacher-feature cache.

Stage 1 (:mod:`kdep_cache.extract.run`) runs a teacher once over K replayable views per image;
stage 1b (:mod:`kdep_cache.fit.run`) fits the SVD/PCA projection and writes aligned targets;
stage 2 (:mod:`kdep_cache.train`) trains students against the cache; stage 3
(:mod:`kdep_cache.transfer`) fine-tunes / linear-probes them downstream (classification,
segmentation, detection). The README's "Layout" section maps every package.
"""

__version__ = "0.1.0"
