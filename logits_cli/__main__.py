from logits_cli.cli.main import main

main()
