// trainer/cli_commands.h: the train, eval, generate, export and report subcommands of `moetrain`
// (argv[0] is "moetrain <command>"); each returns the process exit code.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mt {

int RunTrainCommand(int argc, char** argv);
int RunEvalCommand(int argc, char** argv);
int RunGenerateCommand(int argc, char** argv);
int RunExportCommand(int argc, char** argv);
int RunReportCommand(int argc, char** argv);

// "--key value" / "--key=value" options; repeated keys accumulate (for --set). Options
// not in `known` are an error naming them; "--help" yields {"help": {""}}.
absl::StatusOr<std::map<std::string, std::vector<std::string>>> ParseOptions(
    int argc, char** argv, const std::vector<std::string>& known);

}  // namespace mt
