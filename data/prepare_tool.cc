// data/prepare_tool.cc: `moetrain prepare` as a standalone program (mt_prepare_tool), handy for
// preparing data without building the trainer. Accepts an optional leading "prepare" so
// scripts can call it exactly like the moetrain binary.
#include <cstring>

#include "data/prepare.h"

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "prepare") == 0) {
    return mt::data::RunPrepareCommand(argc - 1, argv + 1);
  }
  return mt::data::RunPrepareCommand(argc, argv);
}
