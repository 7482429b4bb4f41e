"""Validates Kubernetes objects against kubernetes-validate's strict schemas.

Reads a JSON list of objects from the file named by argv[1]; argv[2:] are
the Kubernetes versions. Prints one JSON line per object and version:
{"index": I, "version": V, "error": null | "..."}. A schema that does not
exist for the object's kind is an error too: the caller decides what to
validate elsewhere (CRDs such as PodMonitor).
"""

import json
import sys

import kubernetes_validate.utils as utils

objects = json.load(open(sys.argv[1]))
for version in sys.argv[2:]:
    for index, obj in enumerate(objects):
        error = None
        try:
            utils.validate(obj, version, strict=True)
        except utils.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            error = "%s: %s" % (path or "(root)", e.message)
        except utils.SchemaNotFoundError as e:
            error = e.message
        print(json.dumps({"index": index, "version": version, "error": error}))
