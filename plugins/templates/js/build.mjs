// Build filter.js into the component {{name}}.wasm (world blobmount:policy/{{hook}}-plugin)
// with componentize-js. Run by build.sh.
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";

const { component } = await componentize({
  sourcePath: "filter.js",
  witPath: "wit",
  worldName: "{{hook}}-plugin",
  // blobmount's plugins need none of these; without them the component imports no WASI.
  disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
});
await writeFile("{{name}}.wasm", component);
console.log(`build.mjs: {{name}}.wasm, ${component.length} bytes`);
