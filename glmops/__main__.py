from glmops.cli import main

main()
