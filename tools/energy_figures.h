/* SPDX-License-Identifier: MIT */
/* energy_figures -- mime-energy's SVG figures of lib/energy reports (tools/svg): per-layer
 * energy split into E_DRAM / E_cache / E_reg / E_MAC as stacked bars, one bar per report
 * (the MIME paper's Figs. 5, 6, 8, 9), per-layer throughput relative to a first report
 * (Fig. 7), and off-chip storage against the number of child tasks (Figs. 1, 4).
 * Ownership: borrows everything; writes one file per call. Threads: reentrant. */
#pragma once

#include "lib/energy.h"

/* Stacked energies per layer of net, one bar per report (n of them, 1..8), labelled under
 * the bar by labels[i] (short) and in the legend by names[i]; in millions of MAC energies.
 * 0 or -errno. */
int energy_fig_layers(const char *path, const char *title, const char *subtitle,
                      const struct mime_energy_net *net, const struct mime_energy_report *rep,
                      const char *const *labels, const char *const *names, int n);

/* Throughput per layer of each report relative to rep[0] (cycles of rep[0] / cycles of rep[i],
 * so rep[0] is 1): plain bars with a line at 1. 0 or -errno. */
int energy_fig_throughput(const char *path, const char *title, const char *subtitle,
                          const struct mime_energy_net *net, const struct mime_energy_report *rep,
                          const char *const *names, int n);

/* Conventional vs MIME storage in MiB for 0..max_children children (mime_energy_storage()
 * with head_params per head); the title gives the ratio at n = 3. 0 or -errno. */
int energy_fig_storage(const char *path, const char *subtitle, const struct mime_energy_hw *hw,
                       const struct mime_energy_net *net, long head_params, int max_children);
