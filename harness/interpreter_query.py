"""What the server must know of the sandbox's interpreter, printed as JSON: every key, always a
string (src/backends/python-runtime.ts runs it on the host as `python -I interpreter_query.py`).
"""

import json
import os
import sys
import sysconfig

print(json.dumps({
    "executable": os.path.realpath(sys.executable),
    "stdlib": sysconfig.get_paths()["stdlib"],
    "purelib": sysconfig.get_paths()["purelib"],
    "libdir": sysconfig.get_config_var("LIBDIR") or "",
    "multiarch": sysconfig.get_config_var("MULTIARCH") or "",
    "version": sys.version.split()[0],
}))
