from schoolctl.cli.main import main

main()
