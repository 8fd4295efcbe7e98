// bench/tokenizer_bench.cc: encoding throughput of moetrain's Hugging Face tokenizer on the
// Brown corpus, on one thread and on N. bench/tokenizer_bench.sh runs it next to Hugging
// Face's JS implementation under Node.js with the same documents and the same protocol.
//
//   tokenizer_bench TOKENIZER_DIR BROWN_DIR [--threads N] [--dump-docs FILE]
//
// Protocol (shared with tests/data/hf_tokenizer_reference.mjs --bench): a freshly loaded
// tokenizer per measurement, a warm-up pass over the first 5% of the documents, then one
// timed pass over all 500. With N threads the documents are shared out as `prepare` does
// (dynamic, one at a time). Prints one JSON line per measurement: {"threads": t, "tokens": n,
// "seconds": s, "tokens_per_s": r, "cpu_seconds": c}; c (user + system time of the process
// over the pass) shows how well threads scale even when the machine is shared and wall time
// is not.
// --dump-docs writes the documents framed as the reference script reads them.
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/brown.h"
#include "data/hf_tokenizer.h"

namespace {

std::vector<std::string> BrownDocs(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.size() == 4 && n[0] == 'c' && n[1] >= 'a' && n[1] <= 'r' && std::isdigit(n[2]) &&
        std::isdigit(n[3])) {
      names.push_back(n);
    }
  }
  std::sort(names.begin(), names.end());
  std::vector<std::string> docs;
  for (const std::string& n : names) {
    std::ifstream in(dir + "/" + n, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    auto text = mt::data::BrownToText(ss.str(), n);
    if (!text.ok()) {
      std::fprintf(stderr, "%s\n", std::string(text.status().message()).c_str());
      std::exit(1);
    }
    docs.push_back(*text);
  }
  return docs;
}

// Encodes `docs` on `threads` threads; returns the token count.
int64_t EncodeAll(const mt::data::HfTokenizer& tok, const std::vector<std::string>& docs,
                  int threads) {
  int64_t tokens = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(+ : tokens)
  for (size_t i = 0; i < docs.size(); ++i)
    tokens += static_cast<int64_t>(tok.Encode(docs[i]).size());
  return tokens;
}

double CpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER_DIR BROWN_DIR [--threads N] [--dump-docs FILE]\n",
                 argv[0]);
    return 2;
  }
  int max_threads = 2;
  std::string dump;
  for (int i = 3; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--threads") == 0) max_threads = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--dump-docs") == 0) dump = argv[i + 1];
  }
  const std::vector<std::string> docs = BrownDocs(argv[2]);
  if (!dump.empty()) {
    std::ofstream out(dump, std::ios::binary);
    for (const std::string& d : docs) out << d.size() << "\n" << d;
  }
  const std::vector<std::string> warmup(docs.begin(), docs.begin() + (docs.size() + 19) / 20);
  for (int threads : {1, max_threads}) {
    auto tok = mt::data::HfTokenizer::Load(argv[1]);
    if (!tok.ok()) {
      std::fprintf(stderr, "%s\n", std::string(tok.status().message()).c_str());
      return 1;
    }
    EncodeAll(**tok, warmup, threads);
    const double cpu0 = CpuSeconds();
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t tokens = EncodeAll(**tok, docs, threads);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf(
        "{\"threads\": %d, \"tokens\": %lld, \"seconds\": %.4f, \"tokens_per_s\": %.0f, "
        "\"cpu_seconds\": %.4f}\n",
        threads, static_cast<long long>(tokens), s, tokens / s, CpuSeconds() - cpu0);
    if (max_threads == 1) break;
  }
  return 0;
}
