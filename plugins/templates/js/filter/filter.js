// A blobmount filter plugin (hook `filter`) in JavaScript: hides every file whose key ends
// with the `suffix` parameter (default `.draft`); everything else stays visible.
//
// To make it yours, change `decide` (and the parameters `init` accepts), then add cases to
// fixtures.yaml. A filter must be pure: same object and time, same verdict (the daemon caches
// verdicts). "visible-read-only" shows an object but refuses writes to it.
//
// WIT mapping (componentize-js): interfaces are exported objects with camelCase methods,
// records are objects (`obj.key`, `obj.size`, `obj.mtimeSecs`, `obj.isDir`,
// `obj.contentType`, `obj.metadata` as [name, value] pairs), enums are strings, u64/s64 are
// BigInts, and `result<_, string>` is "return normally" or "throw a string".
import { log } from "blobmount:policy/host@0.1.0";

let suffix = ".draft";

export const plugin = {
  // Called once per instance with plugins.filter.params from the mount config. Throwing a
  // string stops the mount with that message, so refuse anything you do not understand.
  init(params) {
    for (const [key, value] of params) {
      if (key !== "suffix") throw `unknown parameter ${key}`; // CHANGE: the names you accept
      if (value === "") throw "parameter suffix: must not be empty";
      suffix = value;
    }
    log("debug", `hiding keys ending with ${suffix}`);
  },
};

function decide(obj) {
  // CHANGE: your rule.
  if (!obj.isDir && obj.key.endsWith(suffix)) return "hidden";
  return "visible";
}

export const filter = {
  filter(obj, _nowSecs) {
    return decide(obj);
  },
  filterBatch(objs, _nowSecs) {
    return objs.map(decide);
  },
};
