from mo_align.lab.run import main


main()
