/**
 * Summarizes a V8 .cpuprofile: top functions by self time and by total (inclusive) time,
 * optionally per benchmark workload.
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof dist/bench/kv.js --engine stowage --keys 200000 > /tmp/prof/result.txt
 *   node dist/bench/cpuprofile-top.js /tmp/prof/CPU.*.cpuprofile --result /tmp/prof/result.txt --top 15
 *
 * With --result (the child's stdout of bench/kv.js, holding the workloads' time windows), samples
 * are split by workload; without it the whole profile is summarized.
 */
import { readFileSync } from "node:fs";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function label(f: CallFrame): string {
  const file = f.url === "" ? "" : f.url.replace(/^.*\/(dist|node_modules)\//, "$1/");
  const name = f.functionName === "" ? "(anonymous)" : f.functionName;
  return file === "" ? name : `${name} ${file}:${f.lineNumber + 1}`;
}

function summarize(p: Profile, from: number, to: number, top: number, title: string): void {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let t = p.startTime;
  let all = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i]!;
    // A sample's weight is the gap to the next one.
    const dt = i + 1 < p.timeDeltas.length ? p.timeDeltas[i + 1]! : 0;
    if (t < from || t > to || dt <= 0) continue;
    all += dt;
    let id: number | undefined = p.samples[i]!;
    const leaf = label(byId.get(id)!.callFrame);
    self.set(leaf, (self.get(leaf) ?? 0) + dt);
    const seen = new Set<string>();
    while (id !== undefined) {
      const l = label(byId.get(id)!.callFrame);
      if (!seen.has(l)) {
        seen.add(l);
        total.set(l, (total.get(l) ?? 0) + dt);
      }
      id = parent.get(id);
    }
  }
  if (all === 0) return;
  const show = (m: Map<string, number>, what: string): void => {
    console.log(`  top ${what}:`);
    const rows = [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
    for (const [name, us] of rows) {
      console.log(`    ${((100 * us) / all).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${name}`);
    }
  };
  console.log(`${title}: ${(all / 1000).toFixed(0)} ms sampled`);
  show(self, "self");
  show(total, "total");
}

function main(): void {
  const args = process.argv.slice(2);
  let resultFile: string | undefined;
  let top = 20;
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--result") resultFile = args[++i];
    else if (args[i] === "--top") top = Number(args[++i]);
    else files.push(args[i]!);
  }
  if (files.length !== 1) throw new Error("usage: cpuprofile-top PROFILE [--result child-stdout] [--top N]");
  const p = JSON.parse(readFileSync(files[0]!, "utf8")) as Profile;
  if (resultFile === undefined) {
    summarize(p, -Infinity, Infinity, top, "whole profile");
    return;
  }
  const line = readFileSync(resultFile, "utf8")
    .split("\n")
    .find((l) => l.startsWith("@@kv-bench-result "));
  if (line === undefined) throw new Error(`no result line in ${resultFile}`);
  const res = JSON.parse(line.slice("@@kv-bench-result ".length)) as { windowsUs: Record<string, [number, number]> };
  for (const [w, [from, to]] of Object.entries(res.windowsUs)) summarize(p, from, to, top, w);
}

main();
