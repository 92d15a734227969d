# Flags of the benchmark shell scripts, written as the Python scripts' are: --name=value.
#
# Sourced by a script whose header comment holds a "# usage: ..." line and describes its
# flags; its own loop over "$@" matches the flags it takes and hands every other argument to
# help_or_unknown. Usage errors are one `error:` line and the usage line, exit status 2.

_flags_script="${BASH_SOURCE[1]}"

usage_error() {  # usage_error MESSAGE
  echo "error: $1" >&2
  grep -m1 '^# usage: ' "$_flags_script" | cut -c3- >&2
  exit 2
}

help_or_unknown() {  # help_or_unknown ARG: --help prints the header comment; else an error
  case "$1" in
    -h | --help)
      sed -n '2,/^set /s/^# \{0,1\}//p' "$_flags_script"
      exit 0
      ;;
  esac
  usage_error "unknown argument '$1'"
}

set_path_flag() {  # set_path_flag VAR --name=PATH: VAR gets PATH, relative to the caller's cwd
  local name="${2%%=*}" value=""
  if [[ "$2" == *=* ]]; then value="${2#*=}"; fi
  if [[ -z "$value" ]]; then usage_error "$name takes a value: $name=DIR"; fi
  if [[ "$value" != /* ]]; then value="$PWD/$value"; fi
  printf -v "$1" '%s' "$value"
}

parse_mnist_flags() {  # parse_mnist_flags "$@": [--retrain] [--data_dir=DIR] of the MNIST scripts
  # Sets retrain (true|false), data_dir (absolute, or empty) and data (the evaluate/train flags
  # that read the IDX files in data_dir; empty without it). --retrain needs --data_dir.
  retrain=false
  data_dir=""
  local arg
  for arg in "$@"; do
    case "$arg" in
      --retrain) retrain=true ;;
      --data_dir | --data_dir=*) set_path_flag data_dir "$arg" ;;
      *) help_or_unknown "$arg" ;;
    esac
  done
  if $retrain && [[ -z "$data_dir" ]]; then
    usage_error "--retrain needs --data_dir (the recipe meta-trains on full MNIST)"
  fi
  data=()
  if [[ -n "$data_dir" ]]; then data=(--dataset_source=idx "--data_dir=$data_dir"); fi
}
