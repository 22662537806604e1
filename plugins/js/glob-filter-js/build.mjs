// Build filter.js into a component for world blobmount:policy/filter-plugin.
// `npm install && node build.mjs` -> ../../dist/glob-filter-js.wasm
import { componentize } from "@bytecodealliance/componentize-js";
import { mkdir, writeFile } from "node:fs/promises";

const { component } = await componentize({
  sourcePath: "filter.js",
  witPath: "../../../wit",
  worldName: "filter-plugin",
  // blobmount provides no WASI: drop every feature that would import it.
  disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
});
await mkdir("../../dist", { recursive: true });
await writeFile("../../dist/glob-filter-js.wasm", component);
console.log(`glob-filter-js.wasm: ${component.length} bytes`);
