with source as (
    select * from {{ source('raw', 'devices') }}
),

renamed as (
    select
        device_key,
        Manufacturer as manufacturer,
        ManufacturerModelName as manufacturer_model_name,
        DeviceSerialNumber as device_serial_number,
        StationName as station_name,
        SoftwareVersions as software_versions,
        InstitutionName as institution_name,
        InstitutionAddress as institution_address,
        InstitutionalDepartmentName as institutional_department_name,
        source_key,
        batch_id,
        ingested_at
    from source
),

deduplicated as (
    select *
    from renamed
    qualify row_number() over (partition by device_key order by ingested_at desc, source_key) = 1
)

select * from deduplicated
