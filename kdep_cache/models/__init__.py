"""Teachers and students behind one interface: :class:`FeatureNet` gives the pooled
pre-activation penultimate feature (``pre``), the pooled post-activation one (``post``)
and the classifier logits of any supported network."""

from .features import FeatureNet
from .registry import KNOWN_STUDENTS, TeacherInfo, build_student, load_teacher, student_width
from .weights import load_state_dict_file

__all__ = ["FeatureNet", "KNOWN_STUDENTS", "TeacherInfo", "build_student", "load_teacher",
           "student_width", "load_state_dict_file"]
