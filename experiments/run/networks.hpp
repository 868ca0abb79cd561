// The network backend (models/network.hpp), opened on first use.
//
// The command-line program does not link LibTorch: a config that names a network, and `diffode
// train`, open libdiffode_networks.so, which does. It is looked for at $DIFFODE_NETWORK_BACKEND,
// then beside the running program. A program that links the backend itself (the LibTorch tests)
// installs it with use_network_backend instead.
#pragma once

#include "models/network.hpp"

namespace diffode {

// The backend, opened if need be. Throws std::runtime_error saying what was looked for and why it
// failed (a build without LibTorch has no backend to open).
const NetworkBackend& network_backend();

// The backend, which must have solve_on_device (interface version 4); throws std::runtime_error
// naming the version it found otherwise.
const NetworkBackend& device_state_backend();

// Installs a backend linked into the program (then nothing is opened).
void use_network_backend(const NetworkBackend* backend);

}  // namespace diffode
