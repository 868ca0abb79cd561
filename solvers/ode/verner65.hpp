// Verner's "most efficient" 6(5) pair (Verner 2010, "Numerically optimal Runge-Kutta pairs with
// interpolants", Numer. Algorithms 53(2-3), 383-396; the pair RKV65.IIIXb "Efficient" of Verner's
// published coefficient tables, the method DifferentialEquations.jl calls Vern6).
//
// Nine stages, FSAL (the ninth stage is f at the sixth-order solution, and the next step's first):
// eight evaluations per accepted step for order 6, against Dopri5's six for order 5. The
// sixth-order solution is propagated; the embedded fifth-order one only estimates the error. The
// coefficients are Verner's, to the 40 digits he publishes them with (the rational values round to
// the same doubles); tests/solvers/ode_order_test.cpp checks the row sums and the order conditions
// (order 6 for b, order 5 for b_hat, over all rooted trees) and the empirical order 6.
#pragma once

#include "solvers/ode/embedded_rk.hpp"

#include <array>
#include <string_view>

namespace diffode {

struct Verner65Tableau {
  static constexpr std::string_view name = "verner65";
  static constexpr int stages = 9;
  static constexpr int order = 6;
  static constexpr int embedded_order = 5;
  static constexpr std::array<double, 9> c{0.0,      3.0 / 50,       1439.0 / 15000, 1439.0 / 10000, 4973.0 / 10000,
                                           389.0 / 400, 1999.0 / 2000, 1.0,            1.0};
  static constexpr std::array<std::array<double, 9>, 9> a{{
      {0, 0, 0, 0, 0, 0, 0, 0, 0},
      {3.0 / 50, 0, 0, 0, 0, 0, 0, 0, 0},
      {.1923996296296296296296296296296296296296e-1, .7669337037037037037037037037037037037037e-1, 0, 0, 0, 0, 0, 0, 0},
      {.35975e-1, 0, .107925, 0, 0, 0, 0, 0, 0},
      {1.318683415233148260919747276431735612861, 0, -5.042058063628562225427761634715637693344,
       4.220674648395413964508014358283902080483, 0, 0, 0, 0, 0},
      {-41.87259166432751461803757780644346812905, 0, 159.4325621631374917700365669070346830453,
       -122.1192135650100309202516203389242140663, 5.531743066200053768252631238332999150076, 0, 0, 0, 0},
      {-54.43015693531650433250642051294142461271, 0, 207.0672513650184644273657173866509835987,
       -158.6108137845899991828742424365058599469, 6.991816585950242321992597280791793907096,
       -.1859723106220323397765171799549294623692e-1, 0, 0, 0},
      {-54.66374178728197680241215648050386959351, 0, 207.9528062553893734515824816699834244238,
       -159.2889574744995071508959805871426654216, 7.018743740796944434698170760964252490817,
       -.1833878590504572306472782005141738268361e-1, -.5119484997882099077875432497245168395840e-3, 0, 0},
      {.3438957868357036009278820124728322386520e-1, 0, 0, .2582624555633503404659558098586120858767,
       .4209371189673537150642551514069801967032, 4.405396469669310170148836816197095664891,
       -176.4831190242986576151740942499002125029, 172.3641334014150730294022582711902413315, 0},
  }};
  static constexpr std::array<double, 9> b{.3438957868357036009278820124728322386520e-1, 0, 0,
                                           .2582624555633503404659558098586120858767,
                                           .4209371189673537150642551514069801967032,
                                           4.405396469669310170148836816197095664891,
                                           -176.4831190242986576151740942499002125029,
                                           172.3641334014150730294022582711902413315, 0};
  static constexpr std::array<double, 9> b_hat{.4909967648382489730906854927971225836479e-1, 0, 0,
                                               .2251112229516524153401395320539875329485,
                                               .4694682253029562039431948525047387412553,
                                               .8065792249988867707634161808995217981443, 0,
                                               -.6071194891777959797672951465256217122488,
                                               .5686113944047569241147603178766138153594e-1};
};

template <class State>
using Verner65 = EmbeddedRungeKutta<State, Verner65Tableau>;

}  // namespace diffode
