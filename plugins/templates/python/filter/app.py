"""A blobmount filter plugin (hook `filter`) in Python: hides every file whose key ends
with the `suffix` parameter (default `.draft`); everything else stays visible.

To make it yours, change `decide` (and the parameters `init` accepts), then add cases to
fixtures.yaml. A filter must be pure: same object and time, same verdict (the daemon caches
verdicts). `Verdict.VISIBLE_READ_ONLY` shows an object but refuses writes to it.

Built into a component by build.sh (componentize-py). The plugin runs sandboxed: no files,
no environment, no network; `host.log` is the way to say something.
"""

import wit_world
from componentize_py_types import Err
from wit_world.exports.filter import Verdict
from wit_world.imports import host

suffix = ".draft"


def decide(obj) -> Verdict:
    # CHANGE: your rule. obj has key, size, mtime_secs, is_dir, content_type, metadata.
    if not obj.is_dir and obj.key.endswith(suffix):
        return Verdict.HIDDEN
    return Verdict.VISIBLE


class Plugin(wit_world.exports.Plugin):
    def init(self, params) -> None:
        """Called once per instance with plugins.filter.params from the mount config.
        Raising Err(message) stops the mount with that message."""
        global suffix
        for key, value in params:
            if key != "suffix":  # CHANGE: the parameter names you accept
                raise Err(f"unknown parameter {key}")
            if not value:
                raise Err("parameter suffix: must not be empty")
            suffix = value
        host.log(host.Level.DEBUG, f"hiding keys ending with {suffix}")


class Filter(wit_world.exports.Filter):
    def filter(self, obj, now_secs: int) -> Verdict:
        return decide(obj)

    def filter_batch(self, objs, now_secs: int) -> list:
        return [decide(o) for o in objs]
