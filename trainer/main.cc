// trainer/main.cc: the `moetrain` command line: one binary, one subcommand per job.
//
//   moetrain train    --config F [--set key.path=value ...]
//   moetrain eval     --checkpoint DIR --data PREFIX [--batches N --seq-len S --batch-size B]
//   moetrain generate --checkpoint DIR --prompt TEXT [--tokenizer F --max-tokens N
//                     --temperature T --top-p P --seed S]
//   moetrain export   --checkpoint DIR --out DIR [--dtype bf16|fp32]
//   moetrain report   RUN_DIR [--out FILE.html] [--png DIR]
//   moetrain prepare  ...   (data/prepare.h)
//   moetrain plan     ...   (launch/planner.h)
//
// Every failure that is the user's to fix arrives here as an absl::Status and leaves as
// one line on stderr and exit code 1; usage errors exit with 2.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "data/prepare.h"
#include "launch/planner.h"
#include "trainer/cli_commands.h"

namespace {

constexpr char kUsage[] =
    "usage: moetrain <command> [options]\n"
    "\n"
    "commands:\n"
    "  train     train a model from a YAML config (--config F [--set key.path=value ...])\n"
    "  eval      loss of a checkpoint on consecutive windows of a dataset\n"
    "  generate  sample text from a checkpoint\n"
    "  export    write a plain Hugging Face directory from a checkpoint\n"
    "  report    an HTML page (and PNGs) of a run's curves and expert-load heatmaps\n"
    "  prepare   tokenize text/JSONL into Megatron indexed datasets\n"
    "  plan      FLOPs, memory, step time, GPU-hours and cost of a training run\n"
    "\n"
    "`moetrain <command> --help` describes each command's options.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  // Subcommands see argv[0] = "moetrain <cmd>" and their own options.
  std::string name = "moetrain " + cmd;
  std::vector<char*> args = {name.data()};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  const int n = static_cast<int>(args.size());
  if (cmd == "train") return mt::RunTrainCommand(n, args.data());
  if (cmd == "eval") return mt::RunEvalCommand(n, args.data());
  if (cmd == "generate") return mt::RunGenerateCommand(n, args.data());
  if (cmd == "export") return mt::RunExportCommand(n, args.data());
  if (cmd == "report") return mt::RunReportCommand(n, args.data());
  if (cmd == "prepare") return mt::data::RunPrepareCommand(n, args.data());
  if (cmd == "plan") return mt::RunPlanCommand(n, args.data());
  std::fprintf(stderr, "moetrain: unknown command \"%s\"\n\n%s", cmd.c_str(), kUsage);
  return 2;
}
