"""A blobmount filter plugin in Python, the twin of ../../js/glob-filter-js: hides names
ending with one of the `exclude-suffix` parameters and objects larger than `max-size`; shows
`read-only-prefix` keys read-only. Built into a component by ../../build-langs.sh
(componentize-py); the component imports WASI, which blobmount links with nothing granted.

WIT mapping: interfaces are classes named after them (`Plugin`, `Filter`) with snake_case
methods, records are dataclasses, enums are Enum members, `result<_, string>` is "return
normally" or `raise Err(message)`.
"""

import wit_world
from componentize_py_types import Err
from wit_world.exports.filter import Verdict

exclude_suffixes = []
read_only_prefixes = []
max_size = None


def decide(obj) -> Verdict:
    if any(obj.key.endswith(s) for s in exclude_suffixes):
        return Verdict.HIDDEN
    if not obj.is_dir and max_size is not None and obj.size > max_size:
        return Verdict.HIDDEN
    if any(obj.key.startswith(p) for p in read_only_prefixes):
        return Verdict.VISIBLE_READ_ONLY
    return Verdict.VISIBLE


class Plugin(wit_world.exports.Plugin):
    def init(self, params) -> None:
        global max_size
        for key, value in params:
            if key == "exclude-suffix":
                exclude_suffixes.append(value)
            elif key == "read-only-prefix":
                read_only_prefixes.append(value)
            elif key == "max-size":
                if not value.isdigit():
                    raise Err(f"max-size: not a number: {value}")
                max_size = int(value)
            else:
                raise Err(f"unknown parameter {key}")


class Filter(wit_world.exports.Filter):
    def filter(self, obj, now_secs: int) -> Verdict:
        return decide(obj)

    def filter_batch(self, objs, now_secs: int) -> list:
        return [decide(o) for o in objs]
