// Placeholder translation unit until the Brownian tree lands; see brownian.hpp.
#include "solvers/brownian.hpp"
