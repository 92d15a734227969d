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
