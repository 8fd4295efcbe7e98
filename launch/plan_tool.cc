// launch/plan_tool.cc: `mt_plan_tool`, the planner on its own (the same as `moetrain plan`).
#include "launch/planner.h"

int main(int argc, char** argv) { return mt::RunPlanCommand(argc, argv); }
