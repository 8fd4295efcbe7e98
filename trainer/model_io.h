// trainer/model_io.h: the model and optimizer as named tensors, for checkpoints and
// Hugging Face import/export; loading is by name, so any layout reads any other's files.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"
#include "trainer/safetensors.h"

namespace mt {
inline namespace MT_REAL_NS {

// Every parameter and bias as fp32, plus the copies Hugging Face's layout carries for
// each MTP module (model.layers.{L+k}.embed_tokens.weight and shared_head.head.weight,
// which are the shared embedding and head).
std::vector<NamedTensor> ModelTensors(Model& model);
// True for the names ModelTensors() writes (including the MTP copies).
bool IsModelTensorName(Model& model, const std::string& name);
// Copies tensors into the model by name. Every parameter must be present with its exact
// shape; the MTP copies are accepted and ignored; anything else is an error naming it.
absl::Status LoadModelTensors(Model& model, const std::vector<NamedTensor>& tensors,
                              const std::string& source);

// The same over any ParamStore, e.g. one pipeline rank's part of the model: tensors named
// like a parameter of `ps` are loaded (each of them must be present), the MTP copies are
// accepted and ignored, and any other name is an error when `whole_model`, else skipped
// (it belongs to another rank).
absl::Status LoadParams(ParamStore& ps, const ModelConfig& m,
                        const std::vector<NamedTensor>& tensors, const std::string& source,
                        bool whole_model);
// Appends Hugging Face's per-MTP-module copies of the embedding and head (see ModelTensors)
// for the sources present in *tensors.
void AddMtpCopies(const ModelConfig& m, std::vector<NamedTensor>* tensors);
bool IsMtpCopyName(const ModelConfig& m, const std::string& name);

// AdamW moments as two state files ("optimizer-exp_avg", "optimizer-exp_avg_sq") under the
// parameters' names, and back.
void OptimizerStateFiles(AdamW& opt, std::map<std::string, std::vector<NamedTensor>>* files);
absl::Status LoadOptimizerState(AdamW& opt,
                                const std::map<std::string, std::vector<NamedTensor>>& files,
                                const std::string& source);

}  // namespace MT_REAL_NS
}  // namespace mt
