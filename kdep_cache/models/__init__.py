"""Teachers and students behind one interface: :class:`FeatureNet` gives the pooled
pre-activation penultimate feature (``pre``; a ViT's CLS token), the pooled post-activation
one (``post``) and the classifier logits of any supported network."""

from .features import FeatureNet
from .normalization import NORMALIZATIONS, normalization
from .registry import (
    KNOWN_STUDENTS,
    TeacherInfo,
    build_student,
    check_student,
    load_teacher,
    student_width,
)
from .weights import load_state_dict_file, save_safetensors

__all__ = ["FeatureNet", "KNOWN_STUDENTS", "NORMALIZATIONS", "TeacherInfo", "build_student",
           "check_student", "load_teacher", "normalization", "student_width",
           "load_state_dict_file", "save_safetensors"]
