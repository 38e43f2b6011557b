# Stand-ins for the Vitis HLS and Vivado Tcl commands, for tests/test_hls_project.py.
# Each stub records its call (name and arguments) in ::calls; the few whose results the
# generated scripts read back return a plausible value. Any other command stays
# undefined, so a typo or an unexpected command fails exactly as an undefined variable
# does. Usage: tclsh vendor_stubs.tcl <script.tcl> <stub_dir> [<board_part>] [args...]
# prints one recorded call per line.

set ::calls {}
set script [lindex $argv 0]
set ::stub_dir [file normalize [lindex $argv 1]]
set ::stub_board_part [lindex $argv 2]
set argv [lrange $argv 3 end]
set argc [llength $argv]

proc record {name arguments} {
    lappend ::calls [concat [list $name] $arguments]
}

foreach name {
    open_project set_top add_files open_solution set_part create_clock config_interface
    config_export csim_design csynth_design cosim_design export_design
    create_project set_property update_ip_catalog create_bd_design apply_bd_automation
    connect_bd_net connect_bd_intf_net assign_bd_address validate_bd_design save_bd_design
    generate_target update_compile_order launch_runs wait_on_run write_hw_platform open_run
    report_utilization report_timing_summary
} {
    proc $name {args} "record $name \$args; return {}"
}

proc get_board_parts {args} { record get_board_parts $args; return $::stub_board_part }
proc current_project {args} { return project_1 }
proc current_fileset {args} { return sources_1 }
proc create_bd_cell {args} { record create_bd_cell $args; return [lindex $args end] }
proc get_bd_pins {args} { return [lindex $args end] }
proc get_bd_intf_pins {args} { return [lindex $args end] }
proc get_files {args} { record get_files $args; return [lindex $args end] }
proc get_runs {args} { return [lindex $args end] }
proc version {args} { return 2023.2 }
proc make_wrapper {args} {
    record make_wrapper $args
    return [file join $::stub_dir codesign_bd_wrapper.v]
}
proc get_property {name args} {
    switch -- $name {
        STATUS { return "write_bitstream Complete!" }
        DIRECTORY { return [file join $::stub_dir run_impl_1] }
        CONFIG.FREQ_HZ { return 299997009 }
        STATS.WNS { return 0.042 }
        default { return "" }
    }
}
rename exit real_exit
proc exit {args} { record exit $args }

source $script
foreach call $::calls {
    puts $call
}
