from reclora.cli import main

main()
