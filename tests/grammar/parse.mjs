// Parses LogQL and TraceQL with Grafana's own grammars (the ones its query editors use).
// Input: JSON lines {"language": "logql" | "traceql", "query": "..."} on stdin.
// Output: one JSON line per query: {"query": ..., "errors": [positions of syntax errors]}.
import { createInterface } from "node:readline";
import { parser as logql } from "@grafana/lezer-logql";
import { parser as traceql } from "@grafana/lezer-traceql";

const parsers = { logql, traceql };

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const { language, query } = JSON.parse(line);
  const errors = [];
  parsers[language].parse(query).iterate({
    enter: (node) => {
      if (node.type.isError) errors.push(node.from);
    },
  });
  console.log(JSON.stringify({ query, errors }));
}
