"""Hand fixes after layout_tool.py (cli/__init__ registration imports)."""
import sys
from pathlib import Path
root = Path(sys.argv[1])
p = root / 'kdep_cache/cli/__init__.py'
s = p.read_text()
i = s.index('# after the names above')
j = s.index('from .diagnose import diagnose')
s = (s[:i] + '# after the names above: a subcommand module that still imports them from here finds them\n'
     'from . import audit, commands, transfer  # noqa: E402,F401  (register commands)\n' + s[j:])
s = s.replace(':mod:`.cli_base`', ':mod:`.base`')
p.write_text(s)
