#!/usr/bin/env python3
"""The functions of OBJECT that ran, in the order callgrind first names them,
one mangled symbol a line: usage callgrind_functions.py OBJECT CALLGRIND_OUT...
(run with --demangle=no). tests/bench/startup-order writes host/startup.order with it."""
import re, sys
obj = sys.argv[1]
seen = []
seen_set = set()
def name(kind, text):
    m = re.match(r"\((\d+)\)(?: (.*))?", text)
    if not m: return text
    if m.group(2) is not None: names[kind][m.group(1)] = m.group(2)
    return names[kind].get(m.group(1), "")
for path in sys.argv[2:]:
    names = {"ob": {}, "fn": {}}
    ob = cob = ""
    for line in open(path, errors="replace"):
        if line.startswith("ob="): ob = name("ob", line[3:].strip()); cob = ob
        elif line.startswith("cob="): cob = name("ob", line[4:].strip())
        elif line.startswith("fn="):
            f = name("fn", line[3:].strip()); cob = ob
            if ob.endswith(obj) and f not in seen_set: seen_set.add(f); seen.append(f)
        elif line.startswith("cfn="):
            f = name("fn", line[4:].strip())
            if cob.endswith(obj) and f not in seen_set: seen_set.add(f); seen.append(f)
        elif line.startswith("calls="): cob = ob  # a call's cob= holds for that call only
for f in seen:
    if f and not f.startswith("0x"): print(f)
