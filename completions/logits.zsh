
#compdef logits

_logits_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _LOGITS_COMPLETE=complete_zsh logits)
}

compdef _logits_completion logits

