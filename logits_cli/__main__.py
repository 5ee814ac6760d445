from logits_cli.cli import main

main()
