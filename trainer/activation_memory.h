// trainer/activation_memory.h: the bytes a micro-batch's Saved structs hold between its
// forward and its backward, for the activation-memory figure of each precision mode.
//
// Every tensor, StoredActivation and index vector of a Saved struct counts once per buffer
// (tensors shared between structs are not double-counted). A field added to a Saved struct
// must be added here too.
#pragma once

#include "trainer/decoder_layer.h"
#include "trainer/precision.h"

namespace mt {
inline namespace MT_REAL_NS {

void CountSaved(const SwigluMlp::Saved& s, ActivationCounter* c);
void CountSaved(const Mla::Saved& s, ActivationCounter* c);
void CountSaved(const Moe::Saved& s, ActivationCounter* c);
void CountSaved(const DecoderLayer::Saved& s, ActivationCounter* c);

}  // namespace MT_REAL_NS
}  // namespace mt
