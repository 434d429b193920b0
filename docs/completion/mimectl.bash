# SPDX-License-Identifier: MIT
# bash completion for mimectl, mime's client: commands, their options, task names and phase
# numbers from the running daemon (mimectl tasks --json, status --json), image files.
# Installed as $datadir/bash-completion/completions/mimectl; to try it from the source tree:
#   . docs/completion/mimectl.bash

# mimectl with the arguments given, over the socket named on the command line (if any);
# its errors are dropped.
_mimectl_daemon()
{
	local sock=() i
	for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
		if [[ ${COMP_WORDS[i]} == --socket ]]; then
			sock=(--socket "${COMP_WORDS[i + 1]}")
		fi
	done
	mimectl "$@" "${sock[@]}" 2>/dev/null
}

# The daemon's task names.
_mimectl_tasks()
{
	_mimectl_daemon tasks --json | sed -n 's/^ *"name": *"\([^"]*\)".*/\1/p'
}

# The daemon's phase numbers, 1..n_phases; none when no daemon answers.
_mimectl_phases()
{
	local n i
	n=$(_mimectl_daemon status --json |
		sed -n 's/^  "n_phases": *\([1-9][0-9]\{0,3\}\),\{0,1\}$/\1/p')
	for ((i = 1; i <= ${n:-0}; i++)); do
		echo "$i"
	done
}

_mimectl()
{
	local cur prev words cword
	if declare -F _init_completion >/dev/null; then
		_init_completion || return
	else
		cur=${COMP_WORDS[COMP_CWORD]}
		prev=${COMP_WORDS[COMP_CWORD - 1]}
		words=("${COMP_WORDS[@]}")
		cword=$COMP_CWORD
	fi

	local commands='run infer tasks status budget phase reload watch bench'
	if ((cword == 1)); then
		COMPREPLY=($(compgen -W "$commands --help" -- "$cur"))
		return
	fi

	local cmd=${words[1]} opts
	case $cmd in
	run) opts='--bundle --task --phase --top --json --logits --threads --help' ;;
	infer) opts='--task --top --deadline --phase --json --socket --help' ;;
	tasks | status | watch) opts='--json --socket --help' ;;
	budget) opts='--memory --latency --json --socket --help' ;;
	phase) opts='--json --socket --help' ;;
	reload) opts='--socket --help' ;;
	bench) opts='-n -c --requests --concurrency --tasks --json --socket --help' ;;
	*) return ;;
	esac

	case $prev in
	--socket | --bundle)
		COMPREPLY=($(compgen -f -- "$cur"))
		compopt -o filenames 2>/dev/null
		return
		;;
	--task)
		if [[ $cmd == run ]]; then
			return # names are in the bundle; no daemon to ask
		fi
		COMPREPLY=($(compgen -W "$(_mimectl_tasks)" -- "$cur"))
		return
		;;
	--tasks)
		# A comma-separated list: complete the last name.
		local done=${cur%"${cur##*,}"}
		COMPREPLY=($(compgen -P "$done" -W "$(_mimectl_tasks)" -- "${cur##*,}"))
		compopt -o nospace 2>/dev/null
		return
		;;
	--memory)
		COMPREPLY=($(compgen -W 'none 16M 32M 48M 64M 128M 256M 1G' -- "$cur"))
		return
		;;
	--latency)
		COMPREPLY=($(compgen -W 'none 1ms 2ms 5ms 10ms 50ms' -- "$cur"))
		return
		;;
	--phase)
		if [[ $cmd == run ]]; then
			# 0 is the whole parent; the bundle's phases are not known here
			COMPREPLY=($(compgen -W '0' -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$(_mimectl_phases)" -- "$cur"))
		fi
		return
		;;
	--top | --deadline | --threads | -n | -c | --requests | --concurrency)
		return
		;;
	esac

	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$opts" -- "$cur"))
		return
	fi
	case $cmd in
	phase)
		COMPREPLY=($(compgen -W "auto $(_mimectl_phases)" -- "$cur"))
		;;
	run | infer | bench)
		# Images (PNG, PGM, PPM) and directories.
		local f
		while IFS= read -r f; do
			if [[ -d $f || $f == *.[pP][nN][gG] || $f == *.[pP][gGpP][mM] ]]; then
				COMPREPLY+=("$f")
			fi
		done < <(compgen -f -- "$cur")
		compopt -o filenames 2>/dev/null
		;;
	esac
} &&
	complete -F _mimectl mimectl
