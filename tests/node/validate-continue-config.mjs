// Validate Continue config.yaml files with Continue's own schema (@continuedev/config-yaml).
// Usage: node validate-continue-config.mjs FILE...   Exit 0 when every file is valid; otherwise
// print each problem as "FILE: message" and exit 1.
//
// Three checks: the zod schema (parseConfigYaml), Continue's own warnings (validateConfigYaml,
// e.g. a model not trained for autocomplete), and keys the schema does not know: zod drops
// them silently, and Continue would then ignore a misspelt option.
import { readFileSync } from "node:fs";
import { parseConfigYaml, validateConfigYaml } from "@continuedev/config-yaml";
import YAML from "yaml";

function unknownKeys(raw, parsed, path) {
  if (Array.isArray(raw)) {
    return raw.flatMap((item, i) => unknownKeys(item, parsed?.[i], `${path}[${i}]`));
  }
  if (raw === null || typeof raw !== "object") return [];
  return Object.keys(raw).flatMap((key) =>
    parsed && typeof parsed === "object" && key in parsed
      ? unknownKeys(raw[key], parsed[key], `${path}.${key}`)
      : [`unknown key ${path}.${key}`],
  );
}

function problems(file) {
  const text = readFileSync(file, "utf-8");
  let config;
  try {
    config = parseConfigYaml(text);
  } catch (error) {
    return [error.message];
  }
  return [
    ...validateConfigYaml(config).map((e) => `${e.fatal ? "error" : "warning"}: ${e.message}`),
    ...unknownKeys(YAML.parse(text), config, "$"),
  ];
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate-continue-config.mjs FILE...");
  process.exit(2);
}
let failed = false;
for (const file of files) {
  for (const message of problems(file)) {
    console.error(`${file}: ${message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
