from mirrorgate.cli import main

main()
