// SPDX-License-Identifier: MIT
/* cmd_finetune -- `mime-train finetune`: the conventional baselines of issue 3 beside MIME.
 * Default: every weight of the parent is fine-tuned with a new head (the paper's "baseline
 * task-models", Table III), ReLU kept; the copy goes into the output bundle as
 * conventional/<task>/<layer>.weight|bias and conventional/<task>/head.weight|bias.
 * --head-only: the parent stays frozen with its ReLUs and only a head is trained
 * (headonly/<task>/head.weight|bias), to show what the thresholds add.
 * Both record their test accuracy and sparsity under provenance.baselines.<task>; the body
 * is shared with `mime-train thresholds` (cmd_thresholds.c). */
#include "train/cmd.h"
#include "train/mime.h"

int mimetrain_cmd_finetune(int argc, char **argv)
{
	return mimetrain_learn_task(argc, argv, MIMETRAIN_MODE_FINETUNE);
}
