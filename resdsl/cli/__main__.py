from resdsl.cli.app import main

main()
