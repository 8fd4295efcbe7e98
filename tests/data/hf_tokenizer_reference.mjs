// tests/data/hf_tokenizer_reference.mjs: reference token ids from Hugging Face's own JavaScript
// implementation (@huggingface/tokenizers), for the C++ parity tests and the benchmark.
//
//   node hf_tokenizer_reference.mjs NPM_CACHE TOKENIZER_DIR DOCS OUT.json [--with-special]
//   node hf_tokenizer_reference.mjs NPM_CACHE TOKENIZER_DIR DOCS --bench [--workers N]
//
// DOCS frames documents as "<byte length>\n<bytes>" repeated. Each document's bytes are decoded
// as UTF-8 the WHATWG way (TextDecoder, non-fatal, BOM kept): every maximal invalid subpart
// becomes one U+FFFD. That is also what moetrain's encoder does with invalid UTF-8.
// OUT.json: {"ids": [[...], ...], "decoded": [...]}: encoded without special tokens, and
// decode(ids) with the defaults; plus "ids_special" (the post-processor's special tokens
// added) with --with-special.
// --bench prints {"tokens": N, "seconds": S, "cpu_seconds": C} for encoding every document
// (after one warm-up pass over the first 5%), on one thread or on N worker threads splitting
// the documents; C is the process's CPU time over the pass, all threads included.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

function readDocs(file) {
  const buf = fs.readFileSync(file);
  const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
  const docs = [];
  let pos = 0;
  while (pos < buf.length) {
    const nl = buf.indexOf(10, pos);
    if (nl < 0) throw new Error(`${file}: bad framing at byte ${pos}`);
    const len = Number(buf.toString("latin1", pos, nl));
    if (!Number.isInteger(len) || nl + 1 + len > buf.length) {
      throw new Error(`${file}: bad length at byte ${pos}`);
    }
    docs.push(decoder.decode(buf.subarray(nl + 1, nl + 1 + len)));
    pos = nl + 1 + len;
  }
  return docs;
}

async function loadTokenizer(cache, dir) {
  const entry = path.join(cache, "node_modules/@huggingface/tokenizers/dist/tokenizers.mjs");
  const { Tokenizer } = await import(pathToFileURL(entry).href);
  const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const configPath = path.join(dir, "tokenizer_config.json");
  const config = fs.existsSync(configPath) ? JSON.parse(fs.readFileSync(configPath, "utf8")) : {};
  return new Tokenizer(json, config);
}

function encodeAll(tokenizer, docs) {
  let tokens = 0;
  for (const d of docs) tokens += tokenizer.encode(d, { add_special_tokens: false }).ids.length;
  return tokens;
}

if (!isMainThread) {
  const { cache, dir, docs } = workerData;
  const tokenizer = await loadTokenizer(cache, dir);
  encodeAll(tokenizer, docs.slice(0, Math.ceil(docs.length / 20)));
  parentPort.postMessage("ready");
  parentPort.once("message", () => {
    const t0 = performance.now();
    const tokens = encodeAll(tokenizer, docs);
    parentPort.postMessage({ tokens, ms: performance.now() - t0 });
  });
} else {
  const [cache, dir, docsFile, out, ...flags] = process.argv.slice(2);
  if (!docsFile || !out) {
    console.error("usage: hf_tokenizer_reference.mjs NPM_CACHE TOKENIZER_DIR DOCS OUT.json|--bench");
    process.exit(2);
  }
  const docs = readDocs(docsFile);
  if (out === "--bench") {
    const wi = flags.indexOf("--workers");
    const workers = wi >= 0 ? Number(flags[wi + 1]) : 0;
    if (workers <= 0) {
      const tokenizer = await loadTokenizer(cache, dir);
      encodeAll(tokenizer, docs.slice(0, Math.ceil(docs.length / 20)));
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const tokens = encodeAll(tokenizer, docs);
      const seconds = (performance.now() - t0) / 1000;
      const c = process.cpuUsage(c0);
      console.log(JSON.stringify({ tokens, seconds, cpu_seconds: (c.user + c.system) / 1e6 }));
    } else {
      // Documents dealt round-robin; timing starts once every worker has loaded and warmed up.
      const shares = Array.from({ length: workers }, (_, w) => docs.filter((_, i) => i % workers === w));
      const pool = shares.map((share) => new Worker(new URL(import.meta.url), {
        workerData: { cache, dir, docs: share } }));
      await Promise.all(pool.map((w) => new Promise((r) => w.once("message", r))));
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const results = await Promise.all(pool.map((w) => new Promise((r) => {
        w.once("message", r);
        w.postMessage("go");
      })));
      const seconds = (performance.now() - t0) / 1000;
      const c = process.cpuUsage(c0);
      const tokens = results.reduce((a, r) => a + r.tokens, 0);
      console.log(JSON.stringify({ tokens, seconds, cpu_seconds: (c.user + c.system) / 1e6 }));
      await Promise.all(pool.map((w) => w.terminate()));
    }
  } else {
    const tokenizer = await loadTokenizer(cache, dir);
    const ids = docs.map((d) => tokenizer.encode(d, { add_special_tokens: false }).ids);
    // decode() refuses an empty list; the decoding of nothing is "".
    const decoded = ids.map((x) => (x.length ? tokenizer.decode(x) : ""));
    const result = { ids, decoded };
    if (flags.includes("--with-special")) {
      result.ids_special = docs.map((d) => tokenizer.encode(d).ids);
    }
    fs.writeFileSync(out, JSON.stringify(result));
  }
}
