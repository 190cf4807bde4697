// Validates an AsyncAPI document with the official parser. Usage: node asyncapi-validate.mjs FILE
// Prints every diagnostic; exits 1 when any is an error (severity 0), 2 when the file is unreadable.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const file = process.argv[2];
let text;
try {
  text = await readFile(file, "utf8");
} catch (error) {
  console.error(`cannot read ${file}: ${error.message}`);
  process.exit(2);
}
const { document, diagnostics } = await new Parser().parse(text);
const severities = ["error", "warning", "info", "hint"];
for (const d of diagnostics) {
  console.log(`${severities[d.severity] ?? d.severity} ${d.code} at ${d.path.join(".")}: ${d.message}`);
}
const errors = diagnostics.filter((d) => d.severity === 0);
if (errors.length > 0 || document === undefined) {
  console.log(`${errors.length} error(s)`);
  process.exit(1);
}
console.log(`valid: AsyncAPI ${document.version()}, ${document.channels().length} channels, ${document.operations().length} operations`);
