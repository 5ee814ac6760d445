# bash completion for logits. Install: source this file from ~/.bashrc, or copy it to
# ~/.local/share/bash-completion/completions/logits.
#
# It speaks Typer's completion protocol (the program answers when _LOGITS_COMPLETE=
# complete_bash, reading COMP_WORDS and COMP_CWORD) like the script Typer generates, and
# adds one thing: checkpoint URIs stay whole words. bash splits words at ':' (it is in
# COMP_WORDBREAKS), and every logits:// path has one or more; bash-completion's
# _get_comp_words_by_ref -n : rejoins them and __ltrim_colon_completions trims the answers
# back to what readline replaces. Without bash-completion the same is done here.
# Every candidate is then quoted (printf %q): readline inserts it into the command line
# as is, and a run id is opaque text from a server (';', '$' and '`' are legal in one).

_logits_completion() {
    local IFS=$'\n'
    local cur cword
    local -a words
    if declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
        _get_comp_words_by_ref -n : cur words cword
    else
        local line=${COMP_LINE:0:COMP_POINT}
        IFS=$' \t\n' read -r -a words <<<"$line"
        if [[ -z $line || $line == *[[:space:]] ]]; then
            words+=("")
        fi
        cword=$((${#words[@]} - 1))
        cur=${words[cword]}
    fi
    COMPREPLY=( $( env COMP_WORDS="${words[*]}" \
                   COMP_CWORD=$cword \
                   _LOGITS_COMPLETE=complete_bash $1 ) )
    if declare -F __ltrim_colon_completions >/dev/null 2>&1; then
        __ltrim_colon_completions "$cur"
    elif [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local colon_word=${cur%"${cur##*:}"}
        local i=${#COMPREPLY[@]}
        while ((i-- > 0)); do
            COMPREPLY[i]=${COMPREPLY[i]#"$colon_word"}
        done
    fi
    local j=${#COMPREPLY[@]}
    while ((j-- > 0)); do
        printf -v 'COMPREPLY[j]' '%q' "${COMPREPLY[j]}"
    done
    return 0
}

complete -o default -F _logits_completion logits
