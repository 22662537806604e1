// A blobmount filter plugin in plain JavaScript: hides names ending with one of the
// `exclude-suffix` parameters and objects larger than `max-size`; shows `read-only-prefix`
// keys read-only. Built into a component by build.mjs (componentize-js).
// WIT mapping: interfaces are exported objects, enums are strings, u64/s64 are BigInts,
// result<_, string> is "return normally" or "throw a string".

let excludeSuffixes = [];
let readOnlyPrefixes = [];
let maxSize = null;

export const plugin = {
  init(params) {
    for (const [k, v] of params) {
      if (k === "exclude-suffix") excludeSuffixes.push(v);
      else if (k === "read-only-prefix") readOnlyPrefixes.push(v);
      else if (k === "max-size") {
        if (!/^[0-9]+$/.test(v)) throw `max-size: not a number: ${v}`;
        maxSize = BigInt(v);
      } else throw `unknown parameter ${k}`;
    }
  },
};

function decide(obj) {
  if (excludeSuffixes.some((s) => obj.key.endsWith(s))) return "hidden";
  if (!obj.isDir && maxSize !== null && obj.size > maxSize) return "hidden";
  if (readOnlyPrefixes.some((p) => obj.key.startsWith(p))) return "visible-read-only";
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
